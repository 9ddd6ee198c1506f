//! Creation numbers (spec §4.3): a per-name 32-bit counter that starts from the wall clock
//! and grows by one on every re-registration of the same name.

/// The smallest creation the counter takes: 1..=3 belong to the old 16-bit creations, so a
/// 32-bit creation can never collide with them.
pub const MIN_CREATION: u32 = 4;

/// `cr += 1`, and if the result is below [`MIN_CREATION`], [`MIN_CREATION`] (the C epmd's
/// bump).
pub fn bump(cr: u32) -> u32 {
    let next = cr.wrapping_add(1);
    if next < MIN_CREATION {
        MIN_CREATION
    } else {
        next
    }
}

/// The counter of a brand-new name slot: `time(NULL)` (truncated to 32 bits, as the C int
/// assignment does), bumped once, so `now + 1`.
pub fn initial(now_unix: u64) -> u32 {
    bump(now_unix as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bump_skips_the_small_creations() {
        assert_eq!(bump(1_700_000_000), 1_700_000_001);
        assert_eq!(bump(u32::MAX), 4);
        assert_eq!(bump(0), 4);
        assert_eq!(bump(2), 4);
        assert_eq!(bump(3), 4);
        assert_eq!(bump(4), 5);
    }

    #[test]
    fn initial_is_time_plus_one() {
        assert_eq!(initial(1_800_000_000), 1_800_000_001);
        assert_eq!(initial((1u64 << 32) + 10), 11);
    }
}
