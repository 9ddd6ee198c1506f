//! Aligned text tables for people (the `--json` form is for machines).

/// A Unix time as an RFC 3339 UTC date and time (`2026-11-28T03:34:00Z`); the number
/// itself when it is out of range.
pub fn rfc3339(unix_secs: u64) -> String {
    i64::try_from(unix_secs)
        .ok()
        .and_then(|s| jiff::Timestamp::from_second(s).ok())
        .map_or_else(|| unix_secs.to_string(), |t| t.to_string())
}

/// Renders rows under headers, each column padded to its widest cell, two spaces apart.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            text.push_str(cell);
            text.extend(std::iter::repeat_n(' ', w - cell.chars().count()));
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_835_849), "2026-11-28T03:17:29Z");
        assert_eq!(rfc3339(u64::MAX), u64::MAX.to_string());
    }

    #[test]
    fn columns_align() {
        let t = render(
            &["NAME", "PORT"],
            &[
                vec!["a".into(), "1".into()],
                vec!["longer".into(), "65535".into()],
            ],
        );
        assert_eq!(t, "NAME    PORT\na       1\nlonger  65535\n");
    }
}
