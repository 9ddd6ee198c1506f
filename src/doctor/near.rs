//! Near misses: registered names close to the one asked for (a typo, another case, a
//! suffix), shown when PORT_PLEASE2 finds nothing.

/// The edit distance (insertions, deletions, substitutions) between `a` and `b`.
pub fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

/// The names among `registered` near `wanted`: the same ignoring case, one a prefix of the
/// other, or at most 2 edits apart (1 for names of 4 characters or fewer). Closest first.
pub fn near_misses<'a>(wanted: &str, registered: &'a [String]) -> Vec<&'a str> {
    let lower = wanted.to_lowercase();
    let limit = if wanted.chars().count() <= 4 { 1 } else { 2 };
    let mut hits: Vec<(usize, &str)> = registered
        .iter()
        .filter(|r| r.as_str() != wanted)
        .filter_map(|r| {
            let d = distance(wanted, r);
            let other = r.to_lowercase();
            let related = other == lower || other.starts_with(&lower) || lower.starts_with(&other);
            (d <= limit || related).then_some((d, r.as_str()))
        })
        .collect();
    hits.sort();
    hits.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances() {
        assert_eq!(distance("", ""), 0);
        assert_eq!(distance("rabbit", "rabbit"), 0);
        assert_eq!(distance("rabbit", "rabit"), 1);
        assert_eq!(distance("rabbit", "rabbot"), 1);
        assert_eq!(distance("kitten", "sitting"), 3);
        assert_eq!(distance("", "abc"), 3);
    }

    #[test]
    fn near_misses_are_close_and_ordered() {
        let reg: Vec<String> = ["rabbit", "Rabbit2", "rabit", "couch", "ab", "rabbitmq"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            near_misses("rabbit", &reg),
            vec!["rabit", "Rabbit2", "rabbitmq"]
        );
        assert_eq!(near_misses("zzz", &reg), Vec::<&str>::new());
        assert_eq!(near_misses("ab", &reg), Vec::<&str>::new());
        assert_eq!(near_misses("a", &reg), vec!["ab"]);
    }
}
