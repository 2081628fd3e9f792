//! Exponential back-off for work whose next try is persisted (inbox events, jobs, index batches,
//! backfills): a pure delay, so the time can be stored and a restart keeps it. (A retry crate
//! such as backon drives in-process retry loops, which none of these are.)

/// Doubling delays from `base_ms`, never above `max_ms`.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub base_ms: i64,
    pub max_ms: i64,
}

impl Backoff {
    /// The delay after `earlier` failures before this one (0: `base_ms`); negative counts as 0, and
    /// any count, however large, gives at most `max_ms`.
    pub fn delay_ms(self, earlier: i64) -> i64 {
        (self.base_ms << earlier.clamp(0, 20)).min(self.max_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::Backoff;

    const B: Backoff = Backoff { base_ms: 1_000, max_ms: 300_000 };

    #[test]
    fn delays_double_from_the_base() {
        let delays: Vec<i64> = (0..5).map(|n| B.delay_ms(n)).collect();
        assert_eq!(delays, [1_000, 2_000, 4_000, 8_000, 16_000]);
    }

    #[test]
    fn delays_stop_at_the_ceiling_for_any_count() {
        assert_eq!(B.delay_ms(8), 256_000);
        assert_eq!(B.delay_ms(9), 300_000);
        for n in [10, 20, 21, 63, 64, 1_000, i64::MAX] {
            assert_eq!(B.delay_ms(n), 300_000, "after {n} failures");
        }
    }

    #[test]
    fn a_negative_count_is_the_first_delay() {
        assert_eq!(B.delay_ms(-1), 1_000);
        assert_eq!(B.delay_ms(i64::MIN), 1_000);
    }

    #[test]
    fn the_largest_base_does_not_overflow() {
        let big = Backoff { base_ms: i64::MAX >> 20, max_ms: i64::MAX };
        assert_eq!(big.delay_ms(i64::MAX), (i64::MAX >> 20) << 20);
    }
}
