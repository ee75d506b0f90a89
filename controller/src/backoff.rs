//! Retry delays, as pure functions: capped exponential backoff, and a jittered variant for
//! retries that many children may make at once against one agent (so that they spread out
//! instead of knocking together).

use std::time::Duration;

/// First delay of every backoff here.
const BASE: Duration = Duration::from_millis(250);

/// Capped exponential backoff: 250ms, 500ms, 1s, 2s, 4s, 5s, 5s, ... (cap 5s).
pub fn backoff(attempt: u32) -> Duration {
    capped(attempt, Duration::from_secs(5))
}

/// 250ms doubling per attempt, never more than `cap`.
pub fn capped(attempt: u32, cap: Duration) -> Duration {
    let ms = u64::try_from(BASE.as_millis())
        .unwrap_or(u64::MAX)
        .saturating_mul(1u64 << attempt.min(16));
    Duration::from_millis(ms).min(cap)
}

/// "Equal jitter": half of the capped delay, plus a random share of the other half.
/// `unit` is a random number in [0, 1) (see [`random_unit`]); the result lies in
/// [capped/2, capped).
pub fn jittered(attempt: u32, cap: Duration, unit: f64) -> Duration {
    let full = capped(attempt, cap);
    let half = full / 2;
    half + half.mul_f64(unit.clamp(0.0, 1.0))
}

/// A random number in [0, 1), from the system's random source.
pub fn random_unit() -> f64 {
    let (bits, _) = uuid::Uuid::new_v4().as_u64_pair();
    // 53 random bits: every value an f64 in [0, 1) can hold evenly.
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_then_stays_capped() {
        let ms: Vec<u128> = (0..8).map(|a| backoff(a).as_millis()).collect();
        assert_eq!(ms, [250, 500, 1000, 2000, 4000, 5000, 5000, 5000]);
        assert_eq!(backoff(u32::MAX), Duration::from_secs(5));
        assert_eq!(capped(10, Duration::from_secs(30)), Duration::from_secs(30));
        assert_eq!(capped(3, Duration::from_secs(30)), Duration::from_secs(2));
    }

    #[test]
    fn jitter_stays_between_half_and_the_whole_delay() {
        let cap = Duration::from_secs(5);
        assert_eq!(jittered(0, cap, 0.0), Duration::from_millis(125));
        assert_eq!(jittered(2, cap, 0.5), Duration::from_millis(750));
        assert_eq!(jittered(9, cap, 0.0), Duration::from_millis(2500));
        assert!(jittered(9, cap, 0.999_999) < cap);
        // Out-of-range randomness is clamped, never beyond the cap.
        assert_eq!(jittered(9, cap, 7.0), cap);
        assert_eq!(jittered(u32::MAX, cap, -1.0), cap / 2);
        for _ in 0..1000 {
            let u = random_unit();
            assert!((0.0..1.0).contains(&u), "{u}");
        }
    }
}
