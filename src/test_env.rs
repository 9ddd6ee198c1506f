//! A fake environment for unit tests of code that reads variables through a lookup
//! function instead of `std::env`.

use std::ffi::OsString;

/// A lookup function over `vars`.
pub(crate) fn fake_env<'a>(
    vars: &'a [(&'a str, &'a str)],
) -> impl Fn(&str) -> Option<OsString> + 'a {
    move |k| {
        vars.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| OsString::from(v))
    }
}
