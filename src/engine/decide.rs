//! Decide: validate the job, evaluate it against its scope's active
//! snapshot, and record the decision durably before answering. Concurrent
//! decisions share one commit: each store's writer commits every write
//! waiting together (group commit), so decisions go straight to it and
//! there is one batching layer.

use super::access::require;
use super::{Engine, JobView, store_refusal};
use crate::approval::{self, NewJob, Transition};
use crate::identity::{AGENT, Identity};
use crate::job::{Job, JobHash, JobId, JobInput};
use crate::refusal::{Reason, Refusal};
use crate::store::{Recorded, Store, StoreError};

/// The result of Decide.
#[derive(Debug, Clone)]
pub struct Decided {
    pub view: JobView,
    /// The stored decision for this job id and hash, returned again.
    pub replayed: bool,
}

/// Records one decision; the store's writer commits it with every other
/// write waiting.
async fn record(store: &dyn Store, decision: Transition) -> Result<Recorded, Refusal> {
    store
        .record_decisions(vec![decision])
        .await
        .and_then(|mut r| {
            r.pop()
                .ok_or_else(|| StoreError::Corrupt("a decision was not recorded".into()))
        })
        .map_err(store_refusal)
}

impl Engine {
    /// Decide: evaluate a job against the active snapshot and record it.
    pub async fn decide(&self, who: &Identity, input: JobInput) -> Result<Decided, Refusal> {
        let started = std::time::Instant::now();
        let asked = input.job_id.clone();
        let out = self.decide_timed(who, input).await;
        self.metrics.decide_took(started.elapsed().as_secs_f64());
        let job_id = out
            .as_ref()
            .map_or(asked.as_str(), |d| d.view.record.job_id.as_str());
        let result = out
            .as_ref()
            .map(|d| d.view.record.evaluation.decision.as_str());
        super::metrics::log_request("decide", &who.name, job_id, started, result);
        out
    }

    async fn decide_timed(&self, who: &Identity, input: JobInput) -> Result<Decided, Refusal> {
        require(who, AGENT, "Decide")?;
        let job = Job::from_input(input, &self.options.limits)?;
        let now = self.now();
        let job_id = job.job_id.clone().unwrap_or_else(|| JobId::generate(now));
        let canonical = job.canonical_json();
        let hash = JobHash::of_canonical(&canonical);
        // No read first: a known job id conflicts on insert and the stored
        // decision is returned (or ALREADY_EXISTS), in the same round trip.
        let snap = self.snapshot_for(who, &job)?;
        let evaluation = snap.policy.evaluate(&job, Some(&who.name));
        let decision = approval::decided(
            NewJob {
                job_id: job_id.to_string(),
                job_hash: hash.clone(),
                canonical_job: canonical,
                tenant: job.tenant.clone(),
                requester: who.name.clone(),
                snapshot_id: snap.id.clone(),
                decision_id: crate::clock::id_at(now),
                evaluation,
                default_bind_within_secs: snap.policy.doc().default_gate.bind_within.0,
            },
            now,
        );
        match record(self.store.as_ref(), decision).await? {
            Recorded::Inserted(record) => {
                self.changed_here(crate::audit::EventKind::Decision, &record);
                Ok(Decided {
                    view: JobView::new(record, now),
                    replayed: false,
                })
            }
            Recorded::Existing(existing) => replay(existing, &hash, who, now),
        }
    }
}

/// The stored decision for a repeated job id, or ALREADY_EXISTS.
fn replay(
    existing: approval::JobRecord,
    hash: &JobHash,
    who: &Identity,
    now: i64,
) -> Result<Decided, Refusal> {
    if !who.in_tenant(&existing.tenant) {
        // Said without the other tenant's hash: only that the id is taken.
        return Err(Refusal::field(
            Reason::AlreadyExists,
            "job.job_id",
            format!("job id `{}` is taken; use a new job_id", existing.job_id),
        ));
    }
    if existing.job_hash != *hash {
        return Err(Refusal::field(
            Reason::AlreadyExists,
            "job.job_id",
            format!(
                "job `{}` already exists with different content (hash {}); use a new job_id",
                existing.job_id, existing.job_hash
            ),
        ));
    }
    if existing.requester != who.name {
        return Err(Refusal::field(
            Reason::AlreadyExists,
            "job.job_id",
            format!(
                "job `{}` was requested by someone else; use a new job_id",
                existing.job_id
            ),
        ));
    }
    Ok(Decided {
        view: JobView::new(existing, now),
        replayed: true,
    })
}
