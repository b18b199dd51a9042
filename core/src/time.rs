//! The core's clock-free notion of time.
//!
//! An [`Instant`] is a point on the driver's monotonic clock, stored as the time since an
//! origin the driver chooses. The core never reads a clock: every `handle_*(now, …)` gets its
//! `now` from the driver, and the core only adds durations to instants and compares them. The
//! runtime maps its tokio clock onto this type (`sluice_runtime::now`); tests and the
//! simulator's models start from [`Instant::ORIGIN`] and advance by hand, so no test of the
//! core reads a clock either.

use std::ops::{Add, AddAssign, Sub, SubAssign};
use std::time::Duration;

/// A point in time: the duration since the driver's origin. Ordered, `Copy`, and as cheap as a
/// `Duration`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Instant(Duration);

impl Instant {
    /// The driver's origin (time zero).
    pub const ORIGIN: Instant = Instant(Duration::ZERO);

    /// The instant `since` after the origin.
    #[must_use]
    pub const fn from_origin(since: Duration) -> Instant {
        Instant(since)
    }

    /// The time since the origin.
    #[must_use]
    pub const fn since_origin(self) -> Duration {
        self.0
    }

    /// The time from `earlier` to `self`, zero when `earlier` is later (like
    /// `std::time::Instant::duration_since`).
    #[must_use]
    pub fn duration_since(self, earlier: Instant) -> Duration {
        self.0.saturating_sub(earlier.0)
    }

    /// Same as [`Instant::duration_since`].
    #[must_use]
    pub fn saturating_duration_since(self, earlier: Instant) -> Duration {
        self.duration_since(earlier)
    }

    /// The time from `earlier` to `self`, `None` when `earlier` is later.
    #[must_use]
    pub fn checked_duration_since(self, earlier: Instant) -> Option<Duration> {
        self.0.checked_sub(earlier.0)
    }

    /// `self + d`, `None` on overflow.
    #[must_use]
    pub fn checked_add(self, d: Duration) -> Option<Instant> {
        self.0.checked_add(d).map(Instant)
    }

    /// `self - d`, `None` before the origin.
    #[must_use]
    pub fn checked_sub(self, d: Duration) -> Option<Instant> {
        self.0.checked_sub(d).map(Instant)
    }
}

impl Add<Duration> for Instant {
    type Output = Instant;
    fn add(self, d: Duration) -> Instant {
        Instant(self.0 + d)
    }
}

impl AddAssign<Duration> for Instant {
    fn add_assign(&mut self, d: Duration) {
        self.0 += d;
    }
}

impl Sub<Duration> for Instant {
    type Output = Instant;
    /// Saturates at the origin.
    fn sub(self, d: Duration) -> Instant {
        Instant(self.0.saturating_sub(d))
    }
}

impl SubAssign<Duration> for Instant {
    fn sub_assign(&mut self, d: Duration) {
        *self = *self - d;
    }
}

impl Sub<Instant> for Instant {
    type Output = Duration;
    /// Saturates at zero, like [`Instant::duration_since`].
    fn sub(self, earlier: Instant) -> Duration {
        self.duration_since(earlier)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_and_order() {
        let t = Instant::ORIGIN + Duration::from_millis(1500);
        assert_eq!(t.since_origin(), Duration::from_millis(1500));
        assert!(t > Instant::ORIGIN);
        assert_eq!(t - Instant::ORIGIN, Duration::from_millis(1500));
        assert_eq!(Instant::ORIGIN - t, Duration::ZERO);
        assert_eq!(Instant::ORIGIN.checked_duration_since(t), None);
        assert_eq!(t - Duration::from_secs(2), Instant::ORIGIN);
        assert_eq!(
            t.checked_add(Duration::from_millis(500)),
            Some(Instant::from_origin(Duration::from_secs(2)))
        );
    }
}
