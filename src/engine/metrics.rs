//! Prometheus metrics: one registry per engine (so each test server has
//! its own), counters fed where this replica makes a change (never from
//! other replicas' announcements, which would count a change twice), and
//! gauges read from the store when scraped. Labels are bounded: decisions,
//! rule ids of the loaded policies, reasons, tenants, roles and scopes;
//! never job ids or people.

use super::Engine;
use crate::approval::{JobRecord, JobState};
use crate::audit::EventKind;
use crate::refusal::{Reason, Refusal};
use crate::store::{DeliveryResult, JobFilter};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::collections::BTreeMap;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DecisionLabels {
    decision: String,
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BindLabels {
    result: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PendingLabels {
    tenant: String,
    role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SnapshotLabels {
    scope: String,
    snapshot: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    channel: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelLabels {
    channel: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WhatLabels {
    what: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReplicaLabels {
    replica: String,
}

/// The most pending jobs read for one scrape's queue gauges.
const SCRAPE_SCAN_LIMIT: usize = 20_000;

/// Every metric of one engine.
pub struct Metrics {
    registry: Registry,
    decisions: Family<DecisionLabels, Counter>,
    decide_seconds: Histogram,
    bind_seconds: Histogram,
    binds: Family<BindLabels, Counter>,
    approvals: Family<RuleLabels, Counter>,
    rejections: Family<RuleLabels, Counter>,
    expiries: Family<RuleLabels, Counter>,
    escalations: Family<RuleLabels, Counter>,
    overrides: Family<RuleLabels, Counter>,
    outcomes: Family<OutcomeLabels, Counter>,
    time_to_decision: Family<RuleLabels, Histogram>,
    pending: Family<PendingLabels, Gauge>,
    unacknowledged_overrides: Gauge,
    snapshot_version: Family<SnapshotLabels, Gauge>,
    snapshot_loaded: Family<SnapshotLabels, Gauge>,
    replica: Family<ReplicaLabels, Gauge>,
    deliveries: Family<DeliveryLabels, Counter>,
    outbox_pending: Family<ChannelLabels, Gauge>,
    trace_spans: Family<ResultLabels, Counter>,
    overload: Family<WhatLabels, Counter>,
}

fn latency() -> Histogram {
    // 50 µs to about 3 s.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
}

fn waiting() -> Histogram {
    // 1 s to about 4.5 days.
    Histogram::new(exponential_buckets(1.0, 2.0, 19))
}

impl Metrics {
    pub fn new(replica: &str) -> Metrics {
        let mut m = Metrics {
            registry: Registry::with_prefix("gavel"),
            decisions: Family::default(),
            decide_seconds: latency(),
            bind_seconds: latency(),
            binds: Family::default(),
            approvals: Family::default(),
            rejections: Family::default(),
            expiries: Family::default(),
            escalations: Family::default(),
            overrides: Family::default(),
            outcomes: Family::default(),
            time_to_decision: Family::new_with_constructor(waiting),
            pending: Family::default(),
            unacknowledged_overrides: Gauge::default(),
            snapshot_version: Family::default(),
            snapshot_loaded: Family::default(),
            replica: Family::default(),
            deliveries: Family::default(),
            outbox_pending: Family::default(),
            trace_spans: Family::default(),
            overload: Family::default(),
        };
        let r = &mut m.registry;
        r.register(
            "decisions",
            "Decisions recorded, by decision and primary rule",
            m.decisions.clone(),
        );
        r.register_with_unit(
            "decide_duration",
            "Time to evaluate and durably record a decision",
            Unit::Seconds,
            m.decide_seconds.clone(),
        );
        r.register_with_unit(
            "bind_duration",
            "Time to check and record a bind",
            Unit::Seconds,
            m.bind_seconds.clone(),
        );
        r.register(
            "binds",
            "Binds, by result (bound or refused) and refusal reason",
            m.binds.clone(),
        );
        r.register(
            "approvals",
            "Approvals given, by primary rule",
            m.approvals.clone(),
        );
        r.register(
            "rejections",
            "Jobs rejected, by primary rule",
            m.rejections.clone(),
        );
        r.register(
            "expiries",
            "Jobs expired undecided, by primary rule",
            m.expiries.clone(),
        );
        r.register(
            "escalations",
            "Escalations of waiting jobs, by primary rule",
            m.escalations.clone(),
        );
        r.register(
            "overrides",
            "Break-glass overrides, by primary rule",
            m.overrides.clone(),
        );
        r.register(
            "outcomes",
            "Outcomes reported by executors",
            m.outcomes.clone(),
        );
        r.register_with_unit(
            "time_to_decision",
            "From a job's request to its approval or rejection, by primary rule",
            Unit::Seconds,
            m.time_to_decision.clone(),
        );
        r.register(
            "pending_jobs",
            "Jobs waiting for approval, by tenant and by a role that can fill an open slot",
            m.pending.clone(),
        );
        r.register(
            "overload_refusals",
            "Connections closed and requests refused because the server was at its limit (resources.max_connections_per_listener, resources.max_requests_in_flight), by what",
            m.overload.clone(),
        );
        r.register(
            "trace_spans",
            "Trace spans this replica exported over OTLP, or dropped (queue full or export failed)",
            m.trace_spans.clone(),
        );
        r.register(
            "unacknowledged_overrides",
            "Overrides nobody has acknowledged yet",
            m.unacknowledged_overrides.clone(),
        );
        r.register(
            "active_snapshot_version",
            "The version of each scope's active snapshot",
            m.snapshot_version.clone(),
        );
        r.register_with_unit(
            "active_snapshot_activated",
            "When each scope's active snapshot was activated (Unix time)",
            Unit::Seconds,
            m.snapshot_loaded.clone(),
        );
        r.register("replica", "This replica (always 1)", m.replica.clone());
        r.register(
            "deliveries",
            "Notification delivery attempts by this replica, by channel and result (delivered, retry, dead)",
            m.deliveries.clone(),
        );
        r.register(
            "outbox_pending",
            "Notification deliveries waiting to be sent, by channel",
            m.outbox_pending.clone(),
        );
        m.replica
            .get_or_create(&ReplicaLabels {
                replica: replica.to_owned(),
            })
            .set(1);
        m
    }

    pub(super) fn decide_took(&self, secs: f64) {
        self.decide_seconds.observe(secs);
    }

    pub(super) fn bind_took(&self, secs: f64) {
        self.bind_seconds.observe(secs);
    }

    pub(super) fn bind_refused(&self, reason: Reason) {
        self.binds
            .get_or_create(&BindLabels {
                result: "refused".into(),
                reason: reason.as_str().into(),
            })
            .inc();
    }

    /// Counts a change this replica made to a job.
    pub(super) fn observe(&self, kind: EventKind, r: &JobRecord) {
        let rule = RuleLabels {
            rule: r.evaluation.primary_rule.clone(),
        };
        let resolved_in = |m: &Metrics| {
            let secs = (r.updated_at - r.created_at).max(0) as f64 / 1000.0;
            m.time_to_decision.get_or_create(&rule).observe(secs);
        };
        match kind {
            EventKind::Decision => {
                self.decisions
                    .get_or_create(&DecisionLabels {
                        decision: r.evaluation.decision.as_str().into(),
                        rule: rule.rule.clone(),
                    })
                    .inc();
            }
            EventKind::Approval => {
                self.approvals.get_or_create(&rule).inc();
                if r.state == JobState::Approved {
                    resolved_in(self);
                }
            }
            EventKind::Rejection => {
                self.rejections.get_or_create(&rule).inc();
                resolved_in(self);
            }
            EventKind::Expiry => {
                self.expiries.get_or_create(&rule).inc();
            }
            EventKind::Escalation => {
                self.escalations.get_or_create(&rule).inc();
            }
            EventKind::Override => {
                self.overrides.get_or_create(&rule).inc();
            }
            EventKind::Bind => {
                self.binds
                    .get_or_create(&BindLabels {
                        result: "bound".into(),
                        reason: String::new(),
                    })
                    .inc();
            }
            EventKind::Outcome => {
                let outcome = if r.state == JobState::Succeeded {
                    "succeeded"
                } else {
                    "failed"
                };
                self.outcomes
                    .get_or_create(&OutcomeLabels {
                        outcome: outcome.into(),
                    })
                    .inc();
            }
            _ => {}
        }
    }
}

/// The end of an operation that decides or changes a job: the operation,
/// who asked, the job, and what came of it (the decision or state, or the
/// refusal reason). Inside a request these go into its notes and the door
/// writes the request's one line (and span); outside one (the sweeper)
/// this writes the line, with how long it took. Never a token, a secret
/// or a params value.
pub(super) fn log_request(
    op: &'static str,
    who: &str,
    job_id: &str,
    started: std::time::Instant,
    outcome: Result<&str, &Refusal>,
) {
    if crate::observe::op(op, who, job_id, outcome) {
        return;
    }
    let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
    match outcome {
        Ok(result) => tracing::info!(
            target: "gavel::request",
            op, identity = who, job_id, result, duration_ms, "request"
        ),
        Err(r) => tracing::info!(
            target: "gavel::request",
            op, identity = who, job_id, reason = r.reason.as_str(), duration_ms, "request refused"
        ),
    }
}

impl Engine {
    /// Counts one connection closed or request refused at a limit.
    pub fn count_overload(&self, what: &str) {
        self.metrics
            .overload
            .get_or_create(&WhatLabels {
                what: what.to_owned(),
            })
            .inc();
    }

    /// Counts trace spans exported (`exported`) or lost (`dropped`).
    pub(crate) fn count_spans(&self, result: &str, n: u64) {
        self.metrics
            .trace_spans
            .get_or_create(&ResultLabels {
                result: result.to_owned(),
            })
            .inc_by(n);
    }

    /// Counts one delivery attempt of the notifier on this replica.
    pub(crate) fn count_delivery(&self, channel: &str, result: &DeliveryResult) {
        let result = match result {
            DeliveryResult::Delivered => "delivered",
            DeliveryResult::Retry { .. } => "retry",
            DeliveryResult::Dead { .. } => "dead",
        };
        self.metrics
            .deliveries
            .get_or_create(&DeliveryLabels {
                channel: channel.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// The exposition text (OpenMetrics), with the queue and snapshot
    /// gauges read now. Installation-wide: global operators and auditors.
    pub async fn metrics_text(&self, who: &crate::identity::Identity) -> Result<String, Refusal> {
        use crate::identity::{AUDITOR, OPERATOR};
        if !(who.has(OPERATOR) || who.has(AUDITOR)) || !who.tenants.is_global() {
            return Err(Refusal::new(
                Reason::PermissionDenied,
                format!(
                    "`{}` may not read metrics (a global operator or auditor may)",
                    who.name
                ),
            ));
        }
        self.refresh_gauges().await?;
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.metrics.registry)
            .map_err(|_| Refusal::new(Reason::Internal, "metrics could not be written"))?;
        Ok(out)
    }

    async fn refresh_gauges(&self) -> Result<(), Refusal> {
        let m = &self.metrics;
        let now = self.now();
        let mut pending: BTreeMap<(String, String), i64> = BTreeMap::new();
        let mut cursor = None;
        let mut seen = 0;
        loop {
            let batch = self
                .store
                .jobs(&JobFilter {
                    states: vec![JobState::Pending],
                    tenant: None,
                    after: cursor.clone(),
                    limit: 500,
                    unacknowledged_overrides: false,
                })
                .await
                .map_err(super::store_refusal)?;
            let done = batch.len() < 500;
            for r in &batch {
                seen += 1;
                cursor = Some((r.created_at, r.job_id.clone()));
                if r.effective_state(now) != JobState::Pending {
                    continue;
                }
                let filled = r.filled();
                let mut roles: Vec<&String> = r
                    .evaluation
                    .gates
                    .iter()
                    .zip(&filled)
                    .filter(|(g, f)| **f < g.approvers)
                    .flat_map(|(g, _)| g.roles.iter())
                    .collect();
                roles.sort_unstable();
                roles.dedup();
                for role in roles {
                    *pending.entry((r.tenant.clone(), role.clone())).or_default() += 1;
                }
            }
            if done || seen >= SCRAPE_SCAN_LIMIT {
                break;
            }
        }
        m.pending.clear();
        for ((tenant, role), n) in pending {
            m.pending
                .get_or_create(&PendingLabels { tenant, role })
                .set(n);
        }
        let unacked = self
            .store
            .jobs(&JobFilter {
                states: vec![],
                tenant: None,
                after: None,
                limit: SCRAPE_SCAN_LIMIT as i64,
                unacknowledged_overrides: true,
            })
            .await
            .map_err(super::store_refusal)?
            .len();
        m.unacknowledged_overrides.set(unacked as i64);
        let waiting = self
            .store
            .deliveries("pending", SCRAPE_SCAN_LIMIT as i64)
            .await
            .map_err(super::store_refusal)?;
        let mut by_channel: BTreeMap<String, i64> = BTreeMap::new();
        for d in waiting {
            *by_channel.entry(d.channel).or_default() += 1;
        }
        m.outbox_pending.clear();
        for (channel, n) in by_channel {
            m.outbox_pending
                .get_or_create(&ChannelLabels { channel })
                .set(n);
        }
        m.snapshot_version.clear();
        m.snapshot_loaded.clear();
        let active = self
            .store
            .active_snapshots()
            .await
            .map_err(super::store_refusal)?;
        for (scope, id) in active {
            let Some(row) = self
                .store
                .snapshot(id.as_str())
                .await
                .map_err(super::store_refusal)?
            else {
                continue;
            };
            let labels = SnapshotLabels {
                scope: scope.to_string(),
                snapshot: id.to_string(),
            };
            m.snapshot_version
                .get_or_create(&labels)
                .set(row.version.unwrap_or(0));
            m.snapshot_loaded
                .get_or_create(&labels)
                .set(row.activated_at.unwrap_or(0).div_euclid(1000));
        }
        Ok(())
    }
}
