//! Which channels a message goes to: pure, from the configured routes and
//! the job it is about.

use crate::approval::{JobRecord, NotificationKind};
use serde::Deserialize;

/// What a channel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// A signed JSON POST to a URL.
    Webhook,
    /// PagerDuty Events API v2: escalations and break-glass.
    Pagerduty,
    /// A Slack channel, through the Slack app's Web API.
    Slack,
}

impl ChannelKind {
    /// The message kinds a channel of this kind carries at all. PagerDuty
    /// pages for escalations and overrides and resolves them afterwards;
    /// it is never told of a merely pending job.
    pub fn carries(self, kind: NotificationKind) -> bool {
        match self {
            ChannelKind::Webhook | ChannelKind::Slack => true,
            ChannelKind::Pagerduty => kind != NotificationKind::Pending,
        }
    }
}

/// A route: the channels a message goes to when every list given matches
/// (an empty list matches anything).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Route {
    /// Any gate of the job names one of these roles.
    pub roles: Vec<String>,
    /// The job matched one of these rules.
    pub rules: Vec<String>,
    pub tenants: Vec<String>,
    /// pending, escalated, resolved, expired, overridden.
    pub kinds: Vec<String>,
    pub channels: Vec<String>,
}

impl Route {
    fn matches(&self, kind: NotificationKind, job: &JobRecord) -> bool {
        let e = &job.evaluation;
        (self.roles.is_empty()
            || e.gates
                .iter()
                .any(|g| g.roles.iter().any(|r| self.roles.contains(r))))
            && (self.rules.is_empty() || e.matched_rules.iter().any(|r| self.rules.contains(r)))
            && (self.tenants.is_empty() || self.tenants.contains(&job.tenant))
            && (self.kinds.is_empty() || self.kinds.iter().any(|k| k == kind.as_str()))
    }
}

/// The channels for a message: every matching route's, or the default
/// route's when none matches; each channel once, in configuration order of
/// first mention, and only channels that carry this kind.
pub fn channels_for(
    routes: &[Route],
    default: &[String],
    kind_of: impl Fn(&str) -> Option<ChannelKind>,
    kind: NotificationKind,
    job: &JobRecord,
) -> Vec<String> {
    let matched: Vec<&String> = routes
        .iter()
        .filter(|r| r.matches(kind, job))
        .flat_map(|r| &r.channels)
        .collect();
    let chosen: Vec<&String> = if matched.is_empty() {
        default.iter().collect()
    } else {
        matched
    };
    let mut out: Vec<String> = Vec::new();
    for c in chosen {
        if !out.contains(c) && kind_of(c).is_some_and(|k| k.carries(kind)) {
            out.push(c.clone());
        }
    }
    out
}

/// Exponential backoff with jitter: the wait before try `attempt + 1`
/// (attempt 1 just failed) lies in `[d/2, d]`, `d = min(max, base·2^(attempt-1))`.
/// `random` is any u64 (the caller draws it).
pub fn backoff_ms(attempt: u32, base_ms: u64, max_ms: u64, random: u64) -> u64 {
    let exp = attempt.saturating_sub(1).min(40);
    let d = base_ms.saturating_mul(1u64 << exp).min(max_ms).max(1);
    let half = d / 2;
    half + random % (d - half + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_stops_at_the_cap() {
        for attempt in 1..=12 {
            let d = (1000u64 << (attempt - 1)).min(60_000);
            for r in [0, 1, 7, u64::MAX / 3, u64::MAX] {
                let b = backoff_ms(attempt, 1000, 60_000, r);
                assert!(
                    b >= d / 2 && b <= d,
                    "attempt {attempt}: {b} outside [{}, {d}]",
                    d / 2
                );
            }
        }
        assert_eq!(backoff_ms(1, 1000, 60_000, 0), 500);
        assert_eq!(backoff_ms(1, 1000, 60_000, 500), 1000);
        assert!(backoff_ms(u32::MAX, u64::MAX, u64::MAX, 3) > 0);
    }
}
