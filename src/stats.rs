//! Approval statistics from the audit log: how decisions split by tier,
//! how long people take to decide, why they reject, what expires, and per
//! approver how often and how fast they say yes (with the rubber-stamp
//! flag). Pure: the engine feeds it entries; the doors render the report.
//!
//! The report covers the jobs *decided in the window* (their decision
//! entry's time is in `[since, until]`, so what happened in the very
//! millisecond of the report counts), followed to `until`. Times are
//! measured between audit entries:
//! - time to decision: from the `require_approval` decision to the
//!   approval that completed the job or the rejection that ended it;
//! - review time: from that decision (when the job entered the queue and
//!   was first shown to approvers) to the person's approval or rejection.
//!
//! Quantiles are nearest-rank: the `p`-quantile of `n` sorted values is
//! the value at rank `ceil(p·n)` (1-based); the median is `p = 0.5`.

use crate::audit::AuditEntry;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// When an approver is flagged as a possible rubber stamp: at least
/// `min_approvals` approvals, at most `max_rejections` rejections and a
/// median review time under `max_median_review_secs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    pub min_approvals: u64,
    pub max_rejections: u64,
    pub max_median_review_secs: u64,
}

impl Default for Thresholds {
    fn default() -> Thresholds {
        Thresholds {
            min_approvals: 20,
            max_rejections: 0,
            max_median_review_secs: 30,
        }
    }
}

/// Median and 90th percentile of a set of durations, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Durations {
    pub count: u64,
    pub median_ms: Option<i64>,
    pub p90_ms: Option<i64>,
}

impl Durations {
    fn of(mut values: Vec<i64>) -> Durations {
        values.sort_unstable();
        Durations {
            count: values.len() as u64,
            median_ms: quantile(&values, 50),
            p90_ms: quantile(&values, 90),
        }
    }
}

/// The nearest-rank `percent`-quantile of sorted values.
pub fn quantile(sorted: &[i64], percent: u64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len() as u64;
    let rank = (percent * n).div_ceil(100).max(1);
    Some(sorted[(rank - 1) as usize])
}

/// Time to decision and expiries of the jobs one rule (their primary rule)
/// sent for approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleStats {
    pub rule: String,
    pub jobs: u64,
    pub time_to_decision: Durations,
    pub approved: u64,
    pub rejected: u64,
    /// Jobs that expired while waiting for approval: the understaffing
    /// signal.
    pub expired: u64,
    pub escalations: u64,
}

/// Time to decision of the jobs whose gates named one role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleStats {
    pub role: String,
    pub jobs: u64,
    pub time_to_decision: Durations,
}

/// Rejections with the same reason, compared without case, surrounding
/// space or trailing punctuation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReasonCount {
    /// One of its spellings: the first in job-id order.
    pub reason: String,
    pub count: u64,
}

/// One person's reviews.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApproverStats {
    pub approver: String,
    pub approvals: u64,
    pub rejections: u64,
    /// Approvals over approvals and rejections.
    pub approval_rate: f64,
    pub median_review_ms: Option<i64>,
    /// Why this approver is flagged as a possible rubber stamp; absent
    /// when not flagged.
    pub rubber_stamp: Option<String>,
}

/// A job that took long to decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlowJob {
    pub job_id: String,
    pub rule: String,
    pub outcome: String,
    pub ms: i64,
}

/// The largest number of jobs waiting for approval at once within one
/// slice of the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuePoint {
    /// The slice's start (ms since the epoch).
    pub at: i64,
    pub max_depth: u64,
}

/// How many decisions took up to `le_ms` (and more than the bucket before).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bucket {
    /// The bucket's upper bound in ms; `None` for the last, open bucket.
    pub le_ms: Option<i64>,
    pub count: u64,
}

/// Upper bounds of the time-to-decision histogram: 10 s, 30 s, 1 m, 5 m,
/// 15 m, 1 h, 4 h, 1 d, then everything longer.
pub const BUCKETS_MS: [i64; 8] = [
    10_000, 30_000, 60_000, 300_000, 900_000, 3_600_000, 14_400_000, 86_400_000,
];

/// How many slices the queue-depth series has.
pub const QUEUE_SLICES: i64 = 96;

/// The statistics of one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub since: i64,
    pub until: i64,
    /// The tenant the report is limited to; absent: every tenant the
    /// caller reads.
    pub tenant: Option<String>,
    pub thresholds: Thresholds,
    /// Jobs decided in the window.
    pub jobs: u64,
    /// Decisions by tier: allow, allow_with_constraints, require_approval,
    /// deny.
    pub decisions: BTreeMap<String, u64>,
    /// Of the jobs sent for approval, how each ended by `until`: approved,
    /// rejected, expired, cancelled, overridden, pending.
    pub approval_outcomes: BTreeMap<String, u64>,
    pub time_to_decision: Durations,
    pub time_to_decision_histogram: Vec<Bucket>,
    pub by_rule: Vec<RuleStats>,
    pub by_role: Vec<RoleStats>,
    pub rejection_reasons: Vec<ReasonCount>,
    /// Jobs that expired waiting for approval.
    pub expiries: u64,
    /// Approved jobs that expired before anyone bound them.
    pub expired_unbound: u64,
    pub escalations: u64,
    pub overrides: u64,
    pub approvers: Vec<ApproverStats>,
    /// The ten longest times to decision, longest first.
    pub slowest: Vec<SlowJob>,
    pub queue_depth: Vec<QueuePoint>,
}

/// What one job did, gathered from its entries.
#[derive(Default)]
struct JobStory {
    decided_at: Option<i64>,
    tier: String,
    rule: String,
    roles: BTreeSet<String>,
    pending: bool,
    /// How the wait for approval ended, and when.
    end: Option<(&'static str, i64)>,
    reviews: Vec<Review>,
    escalations: u64,
    overridden: bool,
    expired_unbound: bool,
}

struct Review {
    by: String,
    at: i64,
    approve: bool,
    /// A rejection's reason (empty for approvals).
    reason: String,
}

fn text<'a>(body: &'a Value, key: &str) -> &'a str {
    body.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Reason texts that differ only in case, spacing or trailing punctuation
/// are one reason.
pub fn reason_key(reason: &str) -> String {
    let words: Vec<&str> = reason.split_whitespace().collect();
    words
        .join(" ")
        .trim_end_matches(['.', '!', ';', ',', ':'])
        .to_lowercase()
}

/// Builds the report of `[since, until]` from audit entries (any order,
/// any chains; entries of other jobs and kinds are ignored).
pub fn compute<'a>(
    entries: impl IntoIterator<Item = &'a AuditEntry>,
    since: i64,
    until: i64,
    tenant: Option<&str>,
    thresholds: Thresholds,
) -> Report {
    let mut c = Collector::new(since, until);
    for e in entries {
        c.push(e);
    }
    c.finish(tenant, thresholds)
}

/// Gathers what the report needs from entries fed one at a time, keeping
/// a few fields per entry (never the bodies), so a long window of the log
/// need not be held in memory.
pub struct Collector {
    since: i64,
    until: i64,
    jobs: HashMap<String, Vec<Fact>>,
}

/// The part of one entry the report reads.
struct Fact {
    at: i64,
    seq: i64,
    chain: u32,
    kind: FactKind,
    actor: String,
}

enum FactKind {
    Decision {
        tier: String,
        rule: String,
        pending: bool,
        roles: BTreeSet<String>,
    },
    Approval {
        completes: bool,
    },
    Rejection {
        reason: String,
    },
    /// From `pending` (nobody decided in time) or `approved` (nobody
    /// bound in time); other expiries (allowed, never bound) are not read.
    Expiry {
        from_pending: bool,
    },
    Cancel,
    Override,
    Escalation,
}

impl Collector {
    pub fn new(since: i64, until: i64) -> Collector {
        Collector {
            since,
            until,
            jobs: HashMap::new(),
        }
    }

    /// Takes what the report needs from one entry.
    pub fn push(&mut self, e: &AuditEntry) {
        if e.job_id.is_empty() || e.at > self.until || e.at < self.since {
            return;
        }
        let b = &e.body;
        let kind = match e.kind.as_str() {
            "decision" => {
                let mut roles = BTreeSet::new();
                for g in b
                    .get("gates")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    for r in g
                        .get("roles")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        if let Some(r) = r.as_str() {
                            roles.insert(r.to_owned());
                        }
                    }
                }
                FactKind::Decision {
                    tier: text(b, "decision").to_owned(),
                    rule: text(b, "primary_rule").to_owned(),
                    pending: text(b, "state") == "pending",
                    roles,
                }
            }
            "approval" => FactKind::Approval {
                completes: text(b, "state") == "approved",
            },
            "rejection" => FactKind::Rejection {
                reason: text(b, "reason").to_owned(),
            },
            "expiry" => match text(b, "from_state") {
                "pending" => FactKind::Expiry { from_pending: true },
                "approved" => FactKind::Expiry {
                    from_pending: false,
                },
                _ => return,
            },
            "cancel" => FactKind::Cancel,
            "override" => FactKind::Override,
            "escalation" => FactKind::Escalation,
            _ => return,
        };
        // Entries of one job on two chains at the same millisecond keep
        // a stable order: by chain name's hash, then seq.
        let chain = e
            .chain
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
        self.jobs.entry(e.job_id.clone()).or_default().push(Fact {
            at: e.at,
            seq: e.seq,
            chain,
            kind,
            actor: e.actor.clone(),
        });
    }

    /// The report of what was pushed.
    pub fn finish(self, tenant: Option<&str>, thresholds: Thresholds) -> Report {
        let mut stories: Vec<(String, JobStory)> = self
            .jobs
            .into_iter()
            .filter_map(|(id, mut facts)| {
                facts.sort_by_key(|f| (f.at, f.chain, f.seq));
                Some((id, story(facts)?))
            })
            .collect();
        stories.sort_by(|a, b| a.0.cmp(&b.0));
        report(&stories, self.since, self.until, tenant, thresholds)
    }
}

/// A job's story, when its decision is among the facts.
fn story(facts: Vec<Fact>) -> Option<JobStory> {
    let mut s = JobStory::default();
    for f in facts {
        match f.kind {
            FactKind::Decision {
                tier,
                rule,
                pending,
                roles,
            } => {
                s.decided_at = Some(f.at);
                s.tier = tier;
                s.rule = rule;
                s.pending = pending;
                s.roles = roles;
            }
            _ if s.decided_at.is_none() => {}
            FactKind::Approval { completes } => {
                s.reviews.push(Review {
                    by: f.actor,
                    at: f.at,
                    approve: true,
                    reason: String::new(),
                });
                if completes && s.end.is_none() {
                    s.end = Some(("approved", f.at));
                }
            }
            FactKind::Rejection { reason } => {
                s.reviews.push(Review {
                    by: f.actor,
                    at: f.at,
                    approve: false,
                    reason,
                });
                if s.end.is_none() {
                    s.end = Some(("rejected", f.at));
                }
            }
            FactKind::Expiry { from_pending: true } => {
                if s.end.is_none() {
                    s.end = Some(("expired", f.at));
                }
            }
            FactKind::Expiry {
                from_pending: false,
            } => s.expired_unbound = true,
            FactKind::Cancel => {
                if s.end.is_none() && s.pending {
                    s.end = Some(("cancelled", f.at));
                }
            }
            FactKind::Override => {
                s.overridden = true;
                if s.end.is_none() && s.pending {
                    s.end = Some(("overridden", f.at));
                }
            }
            FactKind::Escalation => s.escalations += 1,
        }
    }
    s.decided_at.map(|_| s)
}

fn report(
    stories: &[(String, JobStory)],
    since: i64,
    until: i64,
    tenant: Option<&str>,
    thresholds: Thresholds,
) -> Report {
    let mut decisions: BTreeMap<String, u64> = [
        "allow",
        "allow_with_constraints",
        "require_approval",
        "deny",
    ]
    .into_iter()
    .map(|d| (d.to_owned(), 0))
    .collect();
    let mut outcomes: BTreeMap<String, u64> = [
        "approved",
        "rejected",
        "expired",
        "cancelled",
        "overridden",
        "pending",
    ]
    .into_iter()
    .map(|d| (d.to_owned(), 0))
    .collect();
    let mut all_times = Vec::new();
    let mut rules: BTreeMap<&str, (RuleStats, Vec<i64>)> = BTreeMap::new();
    let mut roles: BTreeMap<&str, (u64, Vec<i64>)> = BTreeMap::new();
    let mut reasons: BTreeMap<String, ReasonCount> = BTreeMap::new();
    let mut people: BTreeMap<&str, (u64, u64, Vec<i64>)> = BTreeMap::new();
    let mut slow = Vec::new();
    let mut changes: Vec<(i64, i64)> = Vec::new();
    let (mut expiries, mut expired_unbound, mut escalations, mut overrides) = (0, 0, 0, 0);

    for (id, s) in stories {
        let decided = s.decided_at.unwrap_or(since);
        *decisions.entry(s.tier.clone()).or_default() += 1;
        escalations += s.escalations;
        overrides += u64::from(s.overridden);
        expired_unbound += u64::from(s.expired_unbound);
        if !s.pending {
            continue;
        }
        let outcome = s.end.map_or("pending", |(o, _)| o);
        *outcomes.entry(outcome.to_owned()).or_default() += 1;
        changes.push((decided, 1));
        if let Some((_, at)) = s.end {
            changes.push((at, -1));
        }
        let rule = rules.entry(s.rule.as_str()).or_insert_with(|| {
            (
                RuleStats {
                    rule: s.rule.clone(),
                    jobs: 0,
                    time_to_decision: Durations::default(),
                    approved: 0,
                    rejected: 0,
                    expired: 0,
                    escalations: 0,
                },
                Vec::new(),
            )
        });
        rule.0.jobs += 1;
        rule.0.escalations += s.escalations;
        for role in &s.roles {
            roles.entry(role.as_str()).or_default().0 += 1;
        }
        match s.end {
            Some((o @ ("approved" | "rejected"), at)) => {
                let ms = at - decided;
                all_times.push(ms);
                rule.1.push(ms);
                if o == "approved" {
                    rule.0.approved += 1;
                } else {
                    rule.0.rejected += 1;
                }
                for role in &s.roles {
                    roles.entry(role.as_str()).or_default().1.push(ms);
                }
                slow.push(SlowJob {
                    job_id: id.clone(),
                    rule: s.rule.clone(),
                    outcome: o.to_owned(),
                    ms,
                });
            }
            Some(("expired", _)) => {
                rule.0.expired += 1;
                expiries += 1;
            }
            _ => {}
        }
        for r in &s.reviews {
            let p = people.entry(r.by.as_str()).or_default();
            if r.approve {
                p.0 += 1;
            } else {
                p.1 += 1;
                reasons
                    .entry(reason_key(&r.reason))
                    .or_insert_with(|| ReasonCount {
                        reason: r.reason.trim().to_owned(),
                        count: 0,
                    })
                    .count += 1;
            }
            p.2.push(r.at - decided);
        }
    }
    let mut rejection_reasons: Vec<ReasonCount> = reasons.into_values().collect();
    rejection_reasons.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));

    let mut histogram: Vec<Bucket> = BUCKETS_MS
        .iter()
        .map(|&le| Bucket {
            le_ms: Some(le),
            count: 0,
        })
        .chain(std::iter::once(Bucket {
            le_ms: None,
            count: 0,
        }))
        .collect();
    for &ms in &all_times {
        let i = BUCKETS_MS
            .iter()
            .position(|&le| ms <= le)
            .unwrap_or(BUCKETS_MS.len());
        histogram[i].count += 1;
    }

    slow.sort_by(|a, b| b.ms.cmp(&a.ms).then_with(|| a.job_id.cmp(&b.job_id)));
    slow.truncate(10);

    let approvers = people
        .into_iter()
        .map(|(name, (approvals, rejections, times))| {
            let mut t = times;
            t.sort_unstable();
            let median = quantile(&t, 50);
            let flagged = approvals >= thresholds.min_approvals
                && rejections <= thresholds.max_rejections
                && median.is_some_and(|m| {
                    m < i64::try_from(thresholds.max_median_review_secs)
                        .unwrap_or(i64::MAX)
                        .saturating_mul(1000)
                });
            ApproverStats {
                approver: name.to_owned(),
                approvals,
                rejections,
                approval_rate: approvals as f64 / (approvals + rejections).max(1) as f64,
                median_review_ms: median,
                rubber_stamp: flagged.then(|| {
                    format!(
                        "{approvals} approvals (at least {}), {rejections} rejections (at most {}), median review {} s (under {} s)",
                        thresholds.min_approvals,
                        thresholds.max_rejections,
                        median.unwrap_or(0) / 1000,
                        thresholds.max_median_review_secs
                    )
                }),
            }
        })
        .collect();

    Report {
        since,
        until,
        tenant: tenant.map(str::to_owned),
        thresholds,
        jobs: stories.len() as u64,
        decisions,
        approval_outcomes: outcomes,
        time_to_decision: Durations::of(all_times),
        time_to_decision_histogram: histogram,
        by_rule: rules
            .into_values()
            .map(|(mut r, t)| {
                r.time_to_decision = Durations::of(t);
                r
            })
            .collect(),
        by_role: roles
            .into_iter()
            .map(|(role, (jobs, t))| RoleStats {
                role: role.to_owned(),
                jobs,
                time_to_decision: Durations::of(t),
            })
            .collect(),
        rejection_reasons,
        expiries,
        expired_unbound,
        escalations,
        overrides,
        approvers,
        slowest: slow,
        queue_depth: queue_series(changes, since, until),
    }
}

/// The deepest queue within each of [`QUEUE_SLICES`] slices of the window
/// (computed in `i128`, so no window overflows).
fn queue_series(mut changes: Vec<(i64, i64)>, since: i64, until: i64) -> Vec<QueuePoint> {
    // At one instant, departures go before arrivals.
    changes.sort_unstable();
    let (since, until) = (i128::from(since), i128::from(until));
    let width = ((until - since) / i128::from(QUEUE_SLICES)).max(1);
    let slices = ((until - since + width - 1) / width).max(1);
    let mut depth: i64 = 0;
    let mut next = changes.into_iter().peekable();
    (0..slices)
        .map(|i| {
            let start = since + i * width;
            let mut max = depth;
            while let Some(&(at, d)) = next.peek() {
                // The last slice also takes the instant `until` itself.
                if i128::from(at) >= start + width && i + 1 < slices {
                    break;
                }
                depth += d;
                max = max.max(depth);
                next.next();
            }
            QueuePoint {
                at: i64::try_from(start).unwrap_or(i64::MAX),
                max_depth: max.max(0) as u64,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(seq: i64, at: i64, job: &str, actor: &str, kind: &str, body: Value) -> AuditEntry {
        AuditEntry {
            chain: "main".into(),
            seq,
            prev_hash: String::new(),
            entry_hash: String::new(),
            at,
            actor: actor.into(),
            job_id: job.into(),
            snapshot_id: String::new(),
            tenant: String::new(),
            kind: kind.into(),
            body,
        }
    }

    /// `n` jobs each approved by `who` `review_ms` after it was decided.
    fn approvals(who: &str, n: i64, review_ms: i64) -> Vec<AuditEntry> {
        (0..n)
            .flat_map(|i| {
                let job = format!("{who}-{i}");
                let at = 1_000_000 + i * 60_000;
                [
                    entry(
                        2 * i,
                        at,
                        &job,
                        "agent",
                        "decision",
                        json!({
                            "decision": "require_approval", "primary_rule": "r", "state": "pending",
                            "gates": [{"roles": ["reviewer"]}],
                        }),
                    ),
                    entry(
                        2 * i + 1,
                        at + review_ms,
                        &job,
                        who,
                        "approval",
                        json!({"state": "approved"}),
                    ),
                ]
            })
            .collect()
    }

    #[test]
    fn the_flag_follows_the_configured_thresholds() {
        let log = approvals("quick", 20, 5_000);
        let flagged = |t: Thresholds| {
            compute(&log, 0, i64::MAX, None, t).approvers[0]
                .rubber_stamp
                .is_some()
        };
        assert!(flagged(Thresholds::default()));
        let more = Thresholds {
            min_approvals: 21,
            ..Thresholds::default()
        };
        assert!(!flagged(more));
        let quicker = Thresholds {
            max_median_review_secs: 5,
            ..Thresholds::default()
        };
        assert!(!flagged(quicker), "5 s is not under 5 s");
        // A slow approver is never flagged, however many approvals.
        let slow = approvals("slow", 40, 45_000);
        assert!(
            compute(&slow, 0, i64::MAX, None, Thresholds::default()).approvers[0]
                .rubber_stamp
                .is_none()
        );
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100];
        assert_eq!(quantile(&v, 50), Some(50));
        assert_eq!(quantile(&v, 90), Some(90));
        assert_eq!(quantile(&v[..3], 50), Some(20));
        assert_eq!(quantile(&v[..1], 90), Some(10));
        assert_eq!(quantile(&[], 50), None);
    }

    #[test]
    fn reasons_differing_in_case_spacing_or_final_punctuation_are_one() {
        assert_eq!(
            reason_key("No  rollback plan."),
            reason_key("no rollback plan")
        );
        assert_eq!(reason_key(" Wrong amount!! "), "wrong amount");
        assert_ne!(reason_key("wrong amount"), reason_key("wrong account"));
    }

    #[test]
    fn entries_outside_the_window_or_without_their_decision_are_left_out() {
        let log = approvals("a", 3, 1_000);
        // The window starts after the first job's decision: its approval
        // alone does not count.
        let r = compute(&log, 1_000_001, i64::MAX, None, Thresholds::default());
        assert_eq!(r.jobs, 2);
        assert_eq!(r.approvers[0].approvals, 2);
        // And ends before the last job's approval: it is still pending.
        let r = compute(
            &log,
            0,
            1_000_000 + 120_000 + 999,
            None,
            Thresholds::default(),
        );
        assert_eq!(r.approval_outcomes["pending"], 1);
        assert_eq!(r.approval_outcomes["approved"], 2);
    }
}
