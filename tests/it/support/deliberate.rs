//! The one list of deliberate differences from the C epmd: the table in
//! `docs/PROTOCOL.md`, read at compile time. The differential tests accept a difference
//! only through [`Deliberate::allow`] with a key of that table; a key missing from the doc
//! fails the test, so the doc and the tests cannot drift apart.

use std::collections::BTreeMap;

/// `docs/PROTOCOL.md`, whose "Deliberate differences" table is the allowlist.
const PROTOCOL_MD: &str = include_str!("../../../docs/PROTOCOL.md");

/// The heading of the table.
const HEADING: &str = "## Deliberate differences from the C epmd 25.x";

/// The rows of the table, by key.
#[derive(Debug)]
pub(crate) struct Deliberate {
    /// key → the row's "behaviour" cell.
    rows: BTreeMap<String, String>,
}

impl Deliberate {
    /// Parses the table of `docs/PROTOCOL.md`. Panics if the table or a key is malformed.
    pub(crate) fn load() -> Deliberate {
        Self::parse(PROTOCOL_MD)
    }

    /// Parses the table under [`HEADING`] in `doc`: rows `| `key` | behaviour | ... |`.
    pub(crate) fn parse(doc: &str) -> Deliberate {
        let start = doc
            .find(HEADING)
            .unwrap_or_else(|| panic!("docs/PROTOCOL.md has no `{HEADING}`"));
        let mut rows = BTreeMap::new();
        let mut in_table = false;
        for line in doc[start..].lines().skip(1) {
            if !line.starts_with('|') {
                if in_table {
                    break;
                }
                continue;
            }
            in_table = true;
            let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
            if cells[0] == "key" || cells[0].starts_with("---") {
                continue;
            }
            let key = cells[0]
                .strip_prefix('`')
                .and_then(|k| k.strip_suffix('`'))
                .unwrap_or_else(|| panic!("row without a `key` first cell: {line}"));
            assert!(
                rows.insert(
                    key.to_owned(),
                    cells.get(1).copied().unwrap_or("").to_owned()
                )
                .is_none(),
                "key `{key}` appears twice in docs/PROTOCOL.md"
            );
        }
        assert!(
            !rows.is_empty(),
            "the deliberate-differences table is empty"
        );
        Deliberate { rows }
    }

    /// Whether `key` is a documented deliberate difference.
    pub(crate) fn has(&self, key: &str) -> bool {
        self.rows.contains_key(key)
    }

    /// Accepts a difference under `key`; panics when the doc does not list it, so a
    /// difference can never be excused by the tests alone.
    pub(crate) fn allow(&self, key: &str) {
        assert!(
            self.has(key),
            "`{key}` is treated as deliberate by a differential test but is not in the \
             table of docs/PROTOCOL.md; document it there or fix the difference"
        );
    }

    /// Every key of the table.
    pub(crate) fn keys(&self) -> Vec<&str> {
        self.rows.keys().map(String::as_str).collect()
    }
}
