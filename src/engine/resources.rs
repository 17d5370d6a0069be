//! Per-identity resource bounds: how many WatchJob streams one identity
//! holds open at once, and how many requests per second it may make (a
//! token bucket on the injected clock, off unless configured). Both
//! refuse with RESOURCE_EXHAUSTED and change nothing. The tables hold one
//! row per configured identity at most (callers are authenticated first).

use super::Engine;
use crate::identity::Identity;
use crate::refusal::{Reason, Refusal};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// `[resources]` in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Resources {
    /// The most WatchJob streams one identity holds open at once.
    pub max_watch_streams_per_identity: usize,
    /// Requests per second one identity may make, on average; 0: no limit.
    pub requests_per_second_per_identity: f64,
    /// How many requests one identity may make at once after being idle;
    /// 0: one second's worth.
    pub request_burst_per_identity: u32,
    /// The longest one database read or write may take before the caller
    /// is answered UNAVAILABLE (see [`crate::store::StoreOptions`]).
    pub database_timeout_ms: u64,
    /// Open connections each listener (gRPC, HTTP) keeps; one more is
    /// closed at once. 0: no limit.
    pub max_connections_per_listener: usize,
    /// Requests being answered at once, both doors together; one more is
    /// refused with RESOURCE_EXHAUSTED. Health and metrics are exempt.
    /// 0: no limit.
    pub max_requests_in_flight: usize,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            max_watch_streams_per_identity: 64,
            requests_per_second_per_identity: 0.0,
            request_burst_per_identity: 0,
            database_timeout_ms: 10_000,
            max_connections_per_listener: 1_000,
            max_requests_in_flight: 4_096,
        }
    }
}

impl Resources {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_watch_streams_per_identity == 0 {
            return Err("resources.max_watch_streams_per_identity must be at least 1".into());
        }
        let rps = self.requests_per_second_per_identity;
        if !rps.is_finite() || rps < 0.0 {
            return Err(
                "resources.requests_per_second_per_identity must be 0 (no limit) or more".into(),
            );
        }
        if self.database_timeout_ms < 100 {
            return Err("resources.database_timeout_ms must be at least 100".into());
        }
        Ok(())
    }

    /// What the store is opened with.
    pub fn store_options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            timeout: std::time::Duration::from_millis(self.database_timeout_ms),
        }
    }

    fn burst(&self) -> f64 {
        if self.request_burst_per_identity > 0 {
            f64::from(self.request_burst_per_identity)
        } else {
            self.requests_per_second_per_identity.ceil().max(1.0)
        }
    }
}

/// The engine's tables.
#[derive(Debug, Default)]
pub(super) struct Usage {
    /// Open watch streams per identity.
    watchers: Mutex<HashMap<String, usize>>,
    /// Tokens left and when they were counted, per identity.
    buckets: Mutex<HashMap<String, (f64, i64)>>,
}

/// One open watch stream; the slot is given back when it drops.
pub(super) struct WatchSlot {
    engine: Arc<Engine>,
    who: String,
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        if let Ok(mut w) = self.engine.usage.watchers.lock()
            && let Some(n) = w.get_mut(&self.who)
        {
            *n -= 1;
            if *n == 0 {
                w.remove(&self.who);
            }
        }
    }
}

fn exhausted(message: String) -> Refusal {
    Refusal::new(Reason::ResourceExhausted, message)
}

impl Engine {
    /// Takes one request from `who`'s allowance (every door calls this
    /// right after authenticating).
    pub fn admit(&self, who: &Identity) -> Result<(), Refusal> {
        let r = &self.options.resources;
        let rps = r.requests_per_second_per_identity;
        if rps <= 0.0 {
            return Ok(());
        }
        let burst = r.burst();
        let now = self.now();
        let mut buckets = self
            .usage
            .buckets
            .lock()
            .map_err(|_| Refusal::new(Reason::Internal, "the rate table is poisoned"))?;
        let (tokens, at) = buckets.entry(who.name.clone()).or_insert((burst, now));
        let elapsed = now.saturating_sub(*at).max(0) as f64 / 1000.0;
        *tokens = (*tokens + elapsed * rps).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait_ms = ((1.0 - *tokens) / rps * 1000.0).ceil() as i64;
            Err(exhausted(format!(
                "`{}` is over its limit of {rps} requests per second; retry in {wait_ms} ms",
                who.name
            )))
        }
    }

    /// A watch stream slot for `who`, or RESOURCE_EXHAUSTED at the limit.
    pub(super) fn watch_slot(self: &Arc<Self>, who: &Identity) -> Result<WatchSlot, Refusal> {
        let max = self.options.resources.max_watch_streams_per_identity;
        let mut w = self
            .usage
            .watchers
            .lock()
            .map_err(|_| Refusal::new(Reason::Internal, "the watch table is poisoned"))?;
        let n = w.entry(who.name.clone()).or_insert(0);
        if *n >= max {
            return Err(exhausted(format!(
                "`{}` already watches {max} jobs at once (resources.max_watch_streams_per_identity); close one first",
                who.name
            )));
        }
        *n += 1;
        Ok(WatchSlot {
            engine: self.clone(),
            who: who.name.clone(),
        })
    }

    /// The resource bounds this engine was started with.
    pub fn resources(&self) -> Resources {
        self.options.resources
    }

    /// Watch streams open now, per identity.
    pub fn open_watches(&self, who: &str) -> usize {
        self.usage
            .watchers
            .lock()
            .map(|w| w.get(who).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}
