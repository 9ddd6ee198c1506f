//! The bounds of the registry, each with the C epmd's value and the reason for it.

/// Limits applied by the [`Registry`](super::Registry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A brand-new name recycles the oldest old/unused slot once the old list holds more than
    /// this many entries (`MAX_UNREG_COUNT` = 1000 in the C epmd; 5 when started with `-d`,
    /// `DEBUG_MAX_UNREG_COUNT`). The list only shrinks by one per new name, so it is not a
    /// hard cap: it is bounded by the peak number of registrations plus this threshold.
    pub old_list_threshold: usize,
    /// The most live registrations. Each holds an open connection, so the server sets it
    /// a few connections below its connection cap: lookups and NAMES are still answered
    /// when registrations have taken everything else. The C epmd has no such bound (its
    /// ~1019 select() slots are shared by everything).
    pub max_registrations: usize,
}

impl Limits {
    /// `MAX_UNREG_COUNT` of the C epmd.
    pub const OLD_LIST_THRESHOLD: usize = 1000;
    /// `DEBUG_MAX_UNREG_COUNT` of the C epmd, used with any `-d`.
    pub const DEBUG_OLD_LIST_THRESHOLD: usize = 5;

    /// The C epmd's limits, with or without `-d`.
    pub fn new(debug: bool) -> Limits {
        Limits {
            old_list_threshold: if debug {
                Self::DEBUG_OLD_LIST_THRESHOLD
            } else {
                Self::OLD_LIST_THRESHOLD
            },
            max_registrations: usize::MAX,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(false)
    }
}
