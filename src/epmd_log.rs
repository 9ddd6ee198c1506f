//! Lines in the C epmd's own log format, `epmd: <ctime>: <message>\r\n` (spec §7.6), for
//! the few messages that scripts and people compare with the C epmd's stderr.
//!
//! The rest of the log goes through [`crate::logging`] in epmd-rs's own format.

/// What the C epmd prints on stderr (even without `-d`) when it honours a KILL_REQ.
pub const KILL_MESSAGE: &str = "got KILL_REQ - terminates normal";

/// `message` as the C epmd's `dbg_printf` prints it at `now` (seconds since the epoch),
/// in local time: `epmd: Sat Nov 28 02:23:41 2026: message\r\n`.
pub fn line_at(now: i64, message: &str) -> String {
    format!("epmd: {}: {message}\r\n", ctime(now))
}

/// `message` in the C epmd's format, stamped with the current time.
pub fn line(message: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    line_at(now, message)
}

/// C's `ctime` without its newline: `Www Mmm dd hh:mm:ss yyyy` (day of month padded with
/// a space), in the local time zone.
pub fn ctime(secs: i64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let t: libc::time_t = secs as libc::time_t;
    // SAFETY: an all-zero `tm` is a valid value (integers and a null zone pointer), which
    // localtime_r overwrites; both pointers are valid for the call.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: `t` and `tm` are live locals; localtime_r is the re-entrant form.
    let ok = !unsafe { libc::localtime_r(&t, &mut tm) }.is_null();
    if !ok {
        return "??? ??? ?? ??:??:?? ????".to_owned();
    }
    format!(
        "{} {}{:3} {:02}:{:02}:{:02} {}",
        DAYS[tm.tm_wday.rem_euclid(7) as usize],
        MONTHS[tm.tm_mon.rem_euclid(12) as usize],
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        i64::from(tm.tm_year) + 1900
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctime_has_cs_shape() {
        // Whatever the local zone, the shape is C's: 24 characters, fixed columns.
        for secs in [0, 1_764_296_621, 1_000_000_000, 4_102_444_800] {
            let text = ctime(secs);
            assert_eq!(text.len(), 24, "{text:?}");
            let b = text.as_bytes();
            assert_eq!(
                (b[3], b[7], b[10], b[19]),
                (b' ', b' ', b' ', b' '),
                "{text:?}"
            );
            assert_eq!((b[13], b[16]), (b':', b':'), "{text:?}");
            assert!(b[8] == b' ' || b[8].is_ascii_digit(), "{text:?}");
        }
    }

    #[test]
    fn kill_line_is_the_c_epmds() {
        let l = line_at(0, KILL_MESSAGE);
        assert!(l.starts_with("epmd: "), "{l:?}");
        assert!(
            l.ends_with(": got KILL_REQ - terminates normal\r\n"),
            "{l:?}"
        );
        assert_eq!(
            l.len(),
            "epmd: ".len() + 24 + ": ".len() + KILL_MESSAGE.len() + 2
        );
    }
}
