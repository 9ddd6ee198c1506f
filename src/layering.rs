//! The module graph of `src/` has no cycle: no two modules import each other, directly or
//! through others, at any level (files, and the directories that group them).
//!
//! Every `src/**.rs` file of the library is parsed (with `syn`); every `use` tree and every
//! path in the code (`crate::…`, `super::…`, `self::…`, or a child module's name) is
//! resolved to the file module that defines it. A file's own inline modules (`mod tests
//! { use super::*; }`) belong to the file. Paths inside macro invocations are not seen.
//! `mod x;` declarations are not imports: a parent owns its children, and only a child
//! that imports its parent back (e.g. `use super::Server` where `Server` is defined in
//! `mod.rs`) closes a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// A module path from the crate root (`["server", "event_loop"]`).
type ModPath = Vec<String>;

/// The library's files by module path.
fn file_modules(src: &Path) -> BTreeMap<ModPath, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("src/ is readable") {
            let path = entry.expect("a directory entry").path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).expect("under src/");
            let mut segs: ModPath = rel
                .iter()
                .map(|s| s.to_string_lossy().into_owned())
                .collect();
            let last = segs.pop().expect("a file name");
            match last.as_str() {
                // main.rs is the binary crate: it sees the library as `epmd_rs`.
                "main.rs" if segs.is_empty() => continue,
                "lib.rs" if segs.is_empty() => {}
                "mod.rs" => {}
                other => segs.push(other.trim_end_matches(".rs").to_owned()),
            }
            out.insert(segs, path);
        }
    }
    out
}

/// Collects the file modules one file refers to.
struct Refs<'a> {
    files: &'a BTreeMap<ModPath, PathBuf>,
    file: ModPath,
    /// The module the visitor is in: the file's, plus the inline modules entered.
    current: ModPath,
    /// Inline modules of this file.
    inline: BTreeSet<ModPath>,
    /// Referred file module → one path that refers to it, for messages.
    found: BTreeMap<ModPath, String>,
}

impl Refs<'_> {
    fn resolve(&mut self, segs: &[String]) {
        let Some(first) = segs.first() else {
            return;
        };
        let mut base: ModPath;
        let mut rest = segs;
        match first.as_str() {
            "crate" => {
                base = Vec::new();
                rest = &segs[1..];
            }
            "self" => {
                base = self.current.clone();
                rest = &segs[1..];
            }
            "super" => {
                base = self.current.clone();
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop();
                    rest = &rest[1..];
                }
            }
            name => {
                let mut child = self.current.clone();
                child.push(name.to_owned());
                if !self.files.contains_key(&child) && !self.inline.contains(&child) {
                    return; // an item, a local name, std or another crate
                }
                base = self.current.clone();
            }
        }
        let mut full = base;
        full.extend(rest.iter().cloned());
        // The longest prefix that is a file module is where the item lives.
        let target = (0..=full.len())
            .rev()
            .map(|n| full[..n].to_vec())
            .find(|p| self.files.contains_key(p));
        if let Some(target) = target {
            if target != self.file {
                self.found.entry(target).or_insert_with(|| full.join("::"));
            }
        }
    }

    fn use_tree(&mut self, prefix: &mut ModPath, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) if n.ident == "self" => self.resolve(&prefix.clone()),
            syn::UseTree::Name(n) => self.use_leaf(prefix, n.ident.to_string()),
            syn::UseTree::Rename(r) if r.ident == "self" => self.resolve(&prefix.clone()),
            syn::UseTree::Rename(r) => self.use_leaf(prefix, r.ident.to_string()),
            syn::UseTree::Glob(_) => self.resolve(&prefix.clone()),
            syn::UseTree::Group(g) => {
                for t in &g.items {
                    self.use_tree(prefix, t);
                }
            }
        }
    }

    fn use_leaf(&mut self, prefix: &ModPath, leaf: String) {
        let mut full = prefix.clone();
        full.push(leaf);
        self.resolve(&full);
    }
}

impl<'ast> Visit<'ast> for Refs<'_> {
    fn visit_item_use(&mut self, u: &'ast syn::ItemUse) {
        let mut prefix = Vec::new();
        self.use_tree(&mut prefix, &u.tree);
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if m.content.is_none() {
            return; // a file module: its own file is scanned
        }
        self.current.push(m.ident.to_string());
        self.inline.insert(self.current.clone());
        syn::visit::visit_item_mod(self, m);
        self.current.pop();
    }

    fn visit_path(&mut self, p: &'ast syn::Path) {
        let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
        self.resolve(&segs);
        syn::visit::visit_path(self, p);
    }
}

/// Inline module names of a parsed file (so that `tests::x` in the file resolves inside it).
fn inline_mods(file: &syn::File, base: &ModPath) -> BTreeSet<ModPath> {
    fn walk(items: &[syn::Item], at: &mut ModPath, out: &mut BTreeSet<ModPath>) {
        for item in items {
            if let syn::Item::Mod(m) = item {
                if let Some((_, inner)) = &m.content {
                    at.push(m.ident.to_string());
                    out.insert(at.clone());
                    walk(inner, at, out);
                    at.pop();
                }
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(&file.items, &mut base.clone(), &mut out);
    out
}

/// File module → (referred file module → an example path).
type Graph = BTreeMap<ModPath, BTreeMap<ModPath, String>>;

fn graph(src: &Path) -> Graph {
    let files = file_modules(src);
    let mut out = Graph::new();
    for (module, path) in &files {
        let text = std::fs::read_to_string(path).expect("a readable source file");
        let parsed = syn::parse_file(&text)
            .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()));
        let mut refs = Refs {
            files: &files,
            file: module.clone(),
            current: module.clone(),
            inline: inline_mods(&parsed, module),
            found: BTreeMap::new(),
        };
        refs.visit_file(&parsed);
        out.insert(module.clone(), refs.found);
    }
    out
}

/// The graph with every module cut to its first `depth` segments (a directory stands for
/// everything under it); edges inside one group are dropped.
fn collapse(g: &Graph, depth: usize) -> Graph {
    let cut = |m: &ModPath| m[..m.len().min(depth)].to_vec();
    let mut out = Graph::new();
    for (from, tos) in g {
        let f = cut(from);
        let entry = out.entry(f.clone()).or_default();
        for (to, via) in tos {
            let t = cut(to);
            if t != f {
                entry
                    .entry(t)
                    .or_insert_with(|| format!("{} uses {via}", name(from)));
            }
        }
    }
    out
}

fn name(m: &ModPath) -> String {
    if m.is_empty() {
        "crate".to_owned()
    } else {
        m.join("::")
    }
}

/// The modules of `g` that lie on a cycle, grouped by strongly connected component, each
/// with the edges between its members described.
fn find_cycles(g: &Graph) -> Vec<Vec<String>> {
    // Kosaraju: finish order on g, then components on the reversed graph.
    fn order(g: &Graph, at: &ModPath, seen: &mut BTreeSet<ModPath>, out: &mut Vec<ModPath>) {
        if !seen.insert(at.clone()) {
            return;
        }
        for to in g.get(at).into_iter().flat_map(BTreeMap::keys) {
            order(g, to, seen, out);
        }
        out.push(at.clone());
    }
    let mut seen = BTreeSet::new();
    let mut finished = Vec::new();
    for m in g.keys() {
        order(g, m, &mut seen, &mut finished);
    }
    let mut reversed = Graph::new();
    for (from, tos) in g {
        for (to, via) in tos {
            reversed
                .entry(to.clone())
                .or_default()
                .insert(from.clone(), via.clone());
        }
    }
    let mut assigned = BTreeSet::new();
    let mut out = Vec::new();
    for root in finished.iter().rev() {
        let mut component = Vec::new();
        order(&reversed, root, &mut assigned, &mut component);
        if component.len() < 2 {
            continue;
        }
        let members: BTreeSet<&ModPath> = component.iter().collect();
        let mut edges = Vec::new();
        for from in &members {
            for (to, via) in g.get(*from).into_iter().flatten() {
                if members.contains(to) {
                    edges.push(format!("{} -> {}: {via}", name(from), name(to)));
                }
            }
        }
        out.push(edges);
    }
    out
}

/// Every cycle found, per level, described.
fn cycles(g: &Graph) -> Vec<String> {
    let depth = g.keys().map(Vec::len).max().unwrap_or(0);
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for d in 1..=depth {
        for c in find_cycles(&collapse(g, d)) {
            // A cycle between modules `d - 1` deep shows again at every deeper level.
            if seen.insert(c.clone()) {
                out.push(format!("level {d}:\n  {}", c.join("\n  ")));
            }
        }
    }
    out
}

#[test]
fn src_has_no_import_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let found = cycles(&graph(&src));
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

#[test]
fn a_child_importing_its_parent_back_is_a_cycle() {
    let dir = std::env::temp_dir().join(format!("epmd-rs-layering-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("server")).unwrap();
    std::fs::write(dir.join("lib.rs"), "pub mod server;\npub mod other;\n").unwrap();
    std::fs::write(
        dir.join("server/mod.rs"),
        "mod conn;\nuse conn::Conn;\npub struct Server(Conn);\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("server/conn.rs"),
        "pub struct Conn;\nimpl super::Server { fn f() {} }\n#[cfg(test)]\nmod tests { use super::*; }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("other.rs"),
        "fn g() { let _ = crate::server::Server; }\n",
    )
    .unwrap();
    let g = graph(&dir);
    let found = cycles(&g);
    assert!(!found.is_empty(), "{found:?}");
    assert!(found[0].contains("server::conn -> server"), "{found:?}");
    // Without the back-import there is none; the test module's `super` is the file itself.
    std::fs::write(
        dir.join("server/conn.rs"),
        "pub struct Conn;\n#[cfg(test)]\nmod tests { use super::*; }\n",
    )
    .unwrap();
    assert!(cycles(&graph(&dir)).is_empty());
    // Two top-level modules importing each other through their children.
    std::fs::write(dir.join("other.rs"), "use crate::server::Server;\n").unwrap();
    std::fs::write(
        dir.join("server/conn.rs"),
        "pub struct Conn;\nfn h() { crate::other::g(); }\n",
    )
    .unwrap();
    let found = cycles(&graph(&dir));
    assert!(found.iter().any(|c| c.starts_with("level 1")), "{found:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
