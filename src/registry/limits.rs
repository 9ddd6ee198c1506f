//! The bounds of the registry, each with the C epmd's value and the reason for it.

/// Limits applied by the [`Registry`](super::Registry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A brand-new name recycles the oldest old/unused slot once the old list holds more than
    /// this many entries (`MAX_UNREG_COUNT` = 1000 in the C epmd; 5 when started with `-d`,
    /// `DEBUG_MAX_UNREG_COUNT`). The list only shrinks by one per new name, so it is not a
    /// hard cap: it is bounded by the peak number of registrations plus this threshold.
    pub old_list_threshold: usize,
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
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::new(false)
    }
}
