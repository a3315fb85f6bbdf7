//! Time for timeouts that span hours (resend after four hours, password
//! expiry): wall-clock time anchored once and advanced by tokio's clock, so
//! tests drive it with `tokio::time::pause`/`advance` instead of sleeping.

use time::{OffsetDateTime, PrimitiveDateTime};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall: OffsetDateTime,
    instant: Instant,
}

impl Clock {
    pub fn new() -> Clock {
        Clock {
            wall: OffsetDateTime::now_utc(),
            instant: Instant::now(),
        }
    }

    pub fn now(&self) -> OffsetDateTime {
        self.wall + Instant::now().saturating_duration_since(self.instant)
    }

    /// Now, as the Configuration Database stores times (UTC).
    pub fn now_db(&self) -> PrimitiveDateTime {
        let now = self.now();
        PrimitiveDateTime::new(now.date(), now.time())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
