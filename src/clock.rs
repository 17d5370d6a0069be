//! Time, injected: the server reads the clock through this trait so tests
//! can move time forward instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

/// A fresh time-ordered id (UUIDv7) whose time part is `now_ms` from the
/// injected clock, so ids of jobs, decisions and binds agree with every
/// other time the server records. Ids made in one process are ordered.
pub fn id_at(now_ms: i64) -> String {
    use std::sync::{LazyLock, Mutex};
    static CONTEXT: LazyLock<Mutex<uuid::ContextV7>> =
        LazyLock::new(|| Mutex::new(uuid::ContextV7::new()));
    let ms = u64::try_from(now_ms).unwrap_or(0);
    let ts = uuid::Timestamp::from_unix(&*CONTEXT, ms / 1000, (ms % 1000) as u32 * 1_000_000);
    uuid::Uuid::new_v7(ts).to_string()
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start_ms: i64) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(start_ms)))
    }

    pub fn advance_secs(&self, secs: i64) {
        self.0.fetch_add(secs * 1000, Ordering::SeqCst);
    }

    /// The current reading, for tests that restart a server at the same time.
    pub fn now_ms_for_test(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    pub fn set_ms(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}
