//! The fd limits of the bench and of the servers it starts.
//!
//! At start the bench raises its soft `RLIMIT_NOFILE` to the hard limit and then tries to
//! go beyond it (this needs `CAP_SYS_RESOURCE`): it holds the registrations of several
//! servers at once (NAMES with 10,000 nodes), and in the hold scenario the server, not the
//! bench, must be the one that runs out of fds. Every server gets the same limit, set in
//! the child before `exec`: the original hard limit if the bench got above it, 64 less
//! otherwise.

use std::sync::OnceLock;

static SERVER_LIMIT: OnceLock<libc::rlimit> = OnceLock::new();

fn get() -> libc::rlimit {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) };
    lim
}

fn set(lim: &libc::rlimit) -> bool {
    // SAFETY: setrlimit reads the struct we pass.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, lim) == 0 }
}

/// Fds the bench keeps beyond the servers' limit when it cannot raise its own.
const BENCH_MARGIN: libc::rlim_t = 64;

/// Raises the soft limit to the hard limit, then tries to raise the bench's limit to
/// `2 × hard + 1024`. The servers get the original hard limit if that worked, and 64 fds
/// less otherwise (so that the bench can still fill a server and then talk to it).
/// Returns the servers' limit and whether the bench got above it.
pub(crate) fn init() -> (u64, bool) {
    let mut lim = get();
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        if !set(&lim) {
            lim = get();
        }
    }
    let want = lim.rlim_max.saturating_mul(2).saturating_add(1024);
    let raised = set(&libc::rlimit {
        rlim_cur: want,
        rlim_max: want,
    });
    let server = if raised {
        lim
    } else {
        let n = lim.rlim_cur.saturating_sub(BENCH_MARGIN).max(64);
        libc::rlimit {
            rlim_cur: n,
            rlim_max: n,
        }
    };
    let server = *SERVER_LIMIT.get_or_init(|| server);
    (server.rlim_cur, raised)
}

/// The limit every server starts with.
pub(crate) fn server_limit() -> libc::rlimit {
    *SERVER_LIMIT.get_or_init(get)
}

/// The bench's current soft limit.
pub(crate) fn bench_limit() -> u64 {
    get().rlim_cur
}
