//! The engine: one set of operations every door (gRPC now; HTTP, the web
//! page and Slack later) calls after authenticating. It checks who may do
//! what, evaluates policy against the active snapshot, and runs the pure
//! transitions of `approval` through the store. Doors only translate.

use crate::approval::{self, ApproveInput, BindInput, JobRecord, JobState, Refused, Transition};
use crate::audit::{AuditEntry, ChainReport, ChainVerifier};
use crate::clock::Clock;
use crate::identity::{AGENT, AUDITOR, BREAKGLASS, Directory, EXECUTOR, Identity, OPERATOR};
use crate::job::{Job, JobHash, JobId, JobInput, Limits};
use crate::policy::{self, Channel, Finding, Severity, Snapshot, SnapshotId};
use crate::receipt::ReceiptSigner;
use crate::refusal::{Reason, Refusal};
use crate::store::{
    JobFilter, Recorded, SnapshotRow, Store, StoreError, TransitionError, TransitionFn,
};
use arc_swap::ArcSwapOption;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc, oneshot};

/// Settings the engine needs.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    pub limits: Limits,
    /// Refuse binds with SNAPSHOT_STALE when the job's snapshot is no longer active.
    pub require_active_snapshot: bool,
    /// The most decisions written in one transaction.
    pub max_batch: usize,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings {
            limits: Limits::default(),
            require_active_snapshot: false,
            max_batch: 512,
        }
    }
}

/// A change to a job, for watchers.
#[derive(Debug, Clone)]
pub struct JobChange {
    pub kind: &'static str,
    pub at: i64,
    pub record: Arc<JobRecord>,
}

/// The result of Decide.
#[derive(Debug, Clone)]
pub struct Decided {
    pub record: JobRecord,
    /// The stored decision for this job id and hash, returned again.
    pub replayed: bool,
}

/// The result of Bind.
#[derive(Debug, Clone)]
pub struct Bound {
    pub record: JobRecord,
    pub bind_id: String,
    /// Compact JWS signed by the server's receipt key.
    pub receipt: String,
}

/// What an executor presents to Bind: the job (preferred) or its hash.
pub enum BindContent {
    Job(Box<JobInput>),
    Hash(String),
}

/// What an approver sends with an approval.
#[derive(Debug, Clone)]
pub struct Approve {
    pub reason: String,
    pub note: String,
    /// The door it came through.
    pub channel: Channel,
    /// The hash and snapshot the approver reviewed, when given.
    pub expected_job_hash: Option<String>,
    pub expected_snapshot: Option<String>,
}

/// Which jobs the approval queue lists.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    pub include_resolved: bool,
    pub tenant: Option<String>,
    /// Only jobs the caller may approve now.
    pub actionable_only: bool,
    /// Only overrides still waiting for acknowledgement.
    pub unacknowledged_overrides: bool,
    /// At most 500; 0 means 100.
    pub page_size: u32,
    /// Continue after this (created_at, job_id).
    pub after: Option<(i64, String)>,
}

/// The result of ReloadPolicy.
#[derive(Debug, Clone)]
pub struct Reloaded {
    pub snapshot: SnapshotRow,
    pub activated: bool,
    pub unchanged: bool,
    pub warnings: Vec<Finding>,
}

/// A snapshot and whether it is the active one.
#[derive(Debug, Clone)]
pub struct SnapshotView {
    pub row: SnapshotRow,
    pub active: bool,
}

/// The verdict of `VerifyAudit`.
#[derive(Debug, Clone)]
pub struct Verification {
    pub ok: bool,
    pub entries: u64,
    pub chains: Vec<ChainReport>,
}

struct PendingDecision {
    record: JobRecord,
    reply: oneshot::Sender<Result<Recorded, String>>,
}

/// The engine. Cheap to share: hold it in an `Arc`.
pub struct Engine {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    directory: Directory,
    settings: EngineSettings,
    active: ArcSwapOption<Snapshot>,
    compiled: Mutex<HashMap<String, Arc<Snapshot>>>,
    decisions: mpsc::Sender<PendingDecision>,
    changes: broadcast::Sender<JobChange>,
    signer: ReceiptSigner,
}

fn unavailable(e: StoreError) -> Refusal {
    tracing::error!(error = %e, "store failure");
    match e {
        StoreError::Corrupt(_) => Refusal::new(
            Reason::Internal,
            "stored state could not be read; see the server log",
        ),
        _ => Refusal::new(
            Reason::Unavailable,
            "the database is unavailable; nothing was changed",
        ),
    }
}

fn not_found(job_id: &str) -> Refusal {
    Refusal::new(Reason::NotFound, format!("no job `{job_id}`"))
}

fn require(who: &Identity, role: &str, what: &str) -> Result<(), Refusal> {
    if who.has(role) {
        Ok(())
    } else {
        Err(Refusal::new(
            Reason::PermissionDenied,
            format!(
                "{what} needs the `{role}` role, which `{}` does not hold",
                who.name
            ),
        ))
    }
}

fn is_approver(who: &Identity) -> bool {
    who.approver_roles().next().is_some()
}

fn require_approver(who: &Identity) -> Result<(), Refusal> {
    if is_approver(who) {
        Ok(())
    } else {
        Err(Refusal::new(
            Reason::PermissionDenied,
            format!("`{}` holds no approver role", who.name),
        ))
    }
}

/// Approvers and the people who oversee them: operators, auditors and
/// break-glass holders. They see the queue and acknowledge overrides.
fn oversees_approvals(who: &Identity) -> bool {
    is_approver(who) || who.has(OPERATOR) || who.has(AUDITOR) || who.has(BREAKGLASS)
}

/// Validates a job id the way `JobId::parse` does, as a refusal.
fn job_id_arg(job_id: &str) -> Result<(), Refusal> {
    JobId::parse(job_id).map(|_| ()).map_err(Refusal::from)
}

impl Engine {
    /// Builds the engine and starts its decision writer. The active snapshot
    /// is read from the store; `initial_policy` (source, file name) is
    /// activated when the store has none, or always when `force` is set.
    pub async fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        directory: Directory,
        settings: EngineSettings,
        initial_policy: Option<(String, String)>,
        force_policy: bool,
        signer: ReceiptSigner,
    ) -> Result<Arc<Engine>, Refusal> {
        let (tx, rx) = mpsc::channel::<PendingDecision>(4096);
        let (changes, _) = broadcast::channel(1024);
        let engine = Arc::new(Engine {
            store: store.clone(),
            clock,
            directory,
            settings,
            active: ArcSwapOption::empty(),
            compiled: Mutex::new(HashMap::new()),
            decisions: tx,
            changes,
            signer,
        });
        tokio::spawn(decision_writer(store, rx, engine.settings.max_batch));

        let active = engine.store.active_snapshot().await.map_err(unavailable)?;
        match (active, initial_policy) {
            (Some(row), Some((source, file))) if force_policy => {
                let _ = row;
                engine.activate_source(&source, &file, "system").await?;
            }
            (Some(row), _) => {
                let snap = engine.compiled_snapshot(&row).await?;
                engine.check_gates(&snap, "stored")?;
                engine.active.store(Some(snap));
            }
            (None, Some((source, file))) => {
                engine.activate_source(&source, &file, "system").await?;
            }
            (None, None) => {
                return Err(Refusal::new(
                    Reason::PolicyInvalid,
                    "the database has no active policy and none was given; pass --policy FILE",
                ));
            }
        }
        tokio::spawn(follow_changes(Arc::downgrade(&engine)));
        Ok(engine)
    }

    /// Re-reads the active snapshot and switches to it if another replica
    /// activated a different one.
    async fn refresh_active(&self) {
        let row = match self.store.active_snapshot().await {
            Ok(Some(row)) => row,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "could not check the active snapshot");
                return;
            }
        };
        if self.active().is_some_and(|a| a.id.as_str() == row.id) {
            return;
        }
        match self.compiled_snapshot(&row).await {
            Ok(snap) => {
                tracing::info!(snapshot = %row.id, "switched to the snapshot another replica activated");
                self.active.store(Some(snap));
            }
            Err(e) => {
                tracing::error!(error = %e, snapshot = %row.id, "cannot load the active snapshot")
            }
        }
    }

    /// Publishes a job another replica changed, for local watchers.
    async fn republish(&self, job_id: &str, kind: &str, version: i64) {
        if self.changes.receiver_count() == 0 {
            return;
        }
        // Watchers see the same kind whichever replica made the change.
        const KINDS: [&str; 11] = [
            "decision",
            "approval",
            "rejection",
            "override",
            "override_ack",
            "cancel",
            "escalation",
            "expiry",
            "bind",
            "outcome",
            "update",
        ];
        let kind = KINDS.into_iter().find(|k| *k == kind).unwrap_or("update");
        // Only the change announced: a later one has its own notification.
        if let Ok(Some(r)) = self.store.job(job_id).await
            && r.version == version
        {
            self.publish(kind, &r);
        }
    }

    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The active snapshot.
    pub fn active(&self) -> Option<Arc<Snapshot>> {
        self.active.load_full()
    }

    /// Watchers subscribe here for every job change.
    pub fn subscribe(&self) -> broadcast::Receiver<JobChange> {
        self.changes.subscribe()
    }

    fn publish(&self, kind: &'static str, record: &JobRecord) {
        let _ = self.changes.send(JobChange {
            kind,
            at: record.updated_at,
            record: Arc::new(record.clone()),
        });
    }

    async fn compiled_snapshot(&self, row: &SnapshotRow) -> Result<Arc<Snapshot>, Refusal> {
        if let Some(s) = self
            .compiled
            .lock()
            .ok()
            .and_then(|m| m.get(&row.id).cloned())
        {
            return Ok(s);
        }
        let loaded = load_off_thread(&row.source, &row.id).await?.map_err(|e| {
            Refusal::new(
                Reason::Internal,
                format!("stored snapshot {} no longer loads: {e}", row.id),
            )
        })?;
        if loaded.snapshot.id.as_str() != row.id {
            return Err(Refusal::new(
                Reason::Internal,
                format!(
                    "stored snapshot {} hashes to {} with this version of gavel",
                    row.id, loaded.snapshot.id
                ),
            ));
        }
        let snap = Arc::new(loaded.snapshot);
        self.remember(&snap);
        Ok(snap)
    }

    /// Keeps a compiled snapshot for reuse: the active one and a few recent
    /// others (a 10,000-rule snapshot is tens of megabytes).
    fn remember(&self, snap: &Arc<Snapshot>) {
        const KEEP: usize = 3;
        let active = self.active().map(|a| a.id.to_string());
        if let Ok(mut m) = self.compiled.lock() {
            m.insert(snap.id.to_string(), snap.clone());
            while m.len() > KEEP {
                let victim = m
                    .keys()
                    .find(|k| {
                        Some(k.as_str()) != active.as_deref() && k.as_str() != snap.id.as_str()
                    })
                    .cloned();
                match victim {
                    Some(k) => m.remove(&k),
                    None => break,
                };
            }
        }
    }

    /// Refuses a snapshot whose gates no set of distinct configured people can fill.
    fn check_gates(&self, snap: &Snapshot, file: &str) -> Result<(), Refusal> {
        if self.directory.is_empty() {
            return Ok(());
        }
        let bad = policy::unsatisfiable_gates(snap.policy.doc(), &self.directory.people(), file);
        match bad.first() {
            None => Ok(()),
            Some(f) => Err(Refusal::new(Reason::GateUnsatisfiable, f.message.clone())),
        }
    }

    async fn validate_policy(
        &self,
        source: &str,
        file: &str,
    ) -> Result<(Snapshot, Vec<Finding>), Refusal> {
        let loaded = load_off_thread(source, file).await?.map_err(|e| {
            let lines: Vec<String> = e
                .findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .map(Finding::to_string)
                .collect();
            Refusal::field(Reason::PolicyInvalid, "source", lines.join("\n"))
        })?;
        self.check_gates(&loaded.snapshot, file)?;
        Ok((loaded.snapshot, loaded.warnings))
    }

    async fn activate_source(
        &self,
        source: &str,
        file: &str,
        actor: &str,
    ) -> Result<Reloaded, Refusal> {
        let (snap, warnings) = self.validate_policy(source, file).await?;
        let row = snapshot_row(&snap, self.now());
        let (stored, changed) = self
            .store
            .activate_snapshot(row, actor, self.now())
            .await
            .map_err(unavailable)?;
        let snap = Arc::new(snap);
        self.active.store(Some(snap.clone()));
        self.remember(&snap);
        Ok(Reloaded {
            snapshot: stored,
            activated: true,
            unchanged: !changed,
            warnings,
        })
    }

    // ------------------------------------------------------------ decisions

    /// Decide: evaluate a job against the active snapshot and record it.
    pub async fn decide(&self, who: &Identity, input: JobInput) -> Result<Decided, Refusal> {
        require(who, AGENT, "Decide")?;
        let job = Job::from_input(input, &self.settings.limits)?;
        let job_id = job.job_id.clone().unwrap_or_else(JobId::generate);
        let canonical = job.canonical_json();
        let hash = JobHash::of_canonical(&canonical);
        // No read first: a known job id conflicts on insert and the stored
        // decision is returned (or ALREADY_EXISTS), in the same round trip.
        let snap = self
            .active()
            .ok_or_else(|| Refusal::new(Reason::Unavailable, "no active policy"))?;
        let evaluation = snap.policy.evaluate(&job, Some(&who.name));
        let now = self.now();
        let record = approval::new_record(
            job_id.to_string(),
            hash.to_string(),
            canonical,
            job.tenant.clone(),
            who.name.clone(),
            snap.id.to_string(),
            uuid::Uuid::now_v7().to_string(),
            evaluation,
            snap.policy.doc().default_gate.bind_within.0,
            now,
        );
        let (reply, wait) = oneshot::channel();
        self.decisions
            .send(PendingDecision { record, reply })
            .await
            .map_err(|_| Refusal::new(Reason::Unavailable, "the server is shutting down"))?;
        let recorded = wait
            .await
            .map_err(|_| Refusal::new(Reason::Unavailable, "the server is shutting down"))?
            .map_err(|e| {
                tracing::error!(error = %e, "recording decisions failed");
                Refusal::new(
                    Reason::Unavailable,
                    "the database is unavailable; nothing was recorded",
                )
            })?;
        match recorded {
            Recorded::Inserted(record) => {
                self.publish("decision", &record);
                Ok(Decided {
                    record,
                    replayed: false,
                })
            }
            Recorded::Existing(existing) => replay(existing, &hash, who),
        }
    }

    /// A job as its requester, an approver, an executor, an operator or an auditor may see it.
    pub async fn get_job(&self, who: &Identity, job_id: &str) -> Result<JobRecord, Refusal> {
        job_id_arg(job_id)?;
        let record = self
            .store
            .job(job_id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| not_found(job_id))?;
        self.may_see(who, &record)?;
        Ok(record)
    }

    fn may_see(&self, who: &Identity, r: &JobRecord) -> Result<(), Refusal> {
        if oversees_approvals(who)
            || who.has(EXECUTOR)
            || who.name == r.requester
            || who.acts_for.contains(&r.requester)
        {
            Ok(())
        } else {
            Err(Refusal::new(
                Reason::PermissionDenied,
                format!("`{}` may only see its own jobs", who.name),
            ))
        }
    }

    async fn run(
        &self,
        job_id: &str,
        kind: &'static str,
        f: TransitionFn,
    ) -> Result<JobRecord, Refusal> {
        job_id_arg(job_id)?;
        let now = self.now();
        match self.store.transition(job_id, now, f).await {
            Ok(record) => {
                self.publish(kind, &record);
                Ok(record)
            }
            Err(TransitionError::NotFound) => Err(not_found(job_id)),
            Err(TransitionError::Refused(r)) => Err(r.refusal),
            Err(TransitionError::Store(StoreError::Conflict)) => Err(Refusal::new(
                Reason::Unavailable,
                format!("job `{job_id}` changed concurrently; retry"),
            )),
            Err(TransitionError::Store(e)) => Err(unavailable(e)),
        }
    }

    pub async fn cancel(
        &self,
        who: &Identity,
        job_id: &str,
        reason: &str,
    ) -> Result<JobRecord, Refusal> {
        require(who, AGENT, "Cancel")?;
        let (who2, reason, now) = (who.clone(), reason.to_owned(), self.now());
        self.run(
            job_id,
            "cancel",
            Box::new(move |r| approval::cancel(r, &who2, &reason, now)),
        )
        .await
    }

    pub async fn approve(
        &self,
        who: &Identity,
        job_id: &str,
        a: Approve,
    ) -> Result<JobRecord, Refusal> {
        let Approve {
            reason,
            note,
            channel,
            expected_job_hash,
            expected_snapshot,
        } = a;
        require_approver(who)?;
        let (who2, now) = (who.clone(), self.now());
        self.run(
            job_id,
            "approval",
            Box::new(move |r| {
                approval::approve(
                    r,
                    &who2,
                    &ApproveInput {
                        reason: &reason,
                        note: &note,
                        channel,
                        expected_job_hash: expected_job_hash.as_deref(),
                        expected_snapshot: expected_snapshot.as_deref(),
                    },
                    now,
                )
            }),
        )
        .await
    }

    pub async fn reject(
        &self,
        who: &Identity,
        job_id: &str,
        reason: &str,
        note: &str,
    ) -> Result<JobRecord, Refusal> {
        require_approver(who)?;
        let (who2, reason, note, now) =
            (who.clone(), reason.to_owned(), note.to_owned(), self.now());
        self.run(
            job_id,
            "rejection",
            Box::new(move |r| approval::reject(r, &who2, &reason, &note, now)),
        )
        .await
    }

    pub async fn override_job(
        &self,
        who: &Identity,
        job_id: &str,
        reason: &str,
        note: &str,
    ) -> Result<JobRecord, Refusal> {
        require(who, BREAKGLASS, "Override")?;
        let bind_within = self
            .active()
            .map_or(30 * 60, |s| s.policy.doc().default_gate.bind_within.0);
        let (who2, reason, note, now) =
            (who.clone(), reason.to_owned(), note.to_owned(), self.now());
        let record = self
            .run(
                job_id,
                "override",
                Box::new(move |r| {
                    approval::override_job(r, &who2, &reason, &note, bind_within, now)
                }),
            )
            .await?;
        tracing::warn!(job_id, by = %who.name, "break-glass override");
        Ok(record)
    }

    pub async fn acknowledge_override(
        &self,
        who: &Identity,
        job_id: &str,
        note: &str,
    ) -> Result<JobRecord, Refusal> {
        if !oversees_approvals(who) {
            return Err(Refusal::new(
                Reason::PermissionDenied,
                format!("`{}` may not acknowledge overrides", who.name),
            ));
        }
        let (who2, note, now) = (who.clone(), note.to_owned(), self.now());
        self.run(
            job_id,
            "override_ack",
            Box::new(move |r| approval::acknowledge_override(r, &who2, &note, now)),
        )
        .await
    }

    /// Bind: the executor's single-use claim to run exactly this job.
    pub async fn bind(
        &self,
        who: &Identity,
        job_id: &str,
        content: BindContent,
        snapshot_id: &str,
    ) -> Result<Bound, Refusal> {
        require(who, EXECUTOR, "Bind")?;
        job_id_arg(job_id)?;
        let presented = match content {
            BindContent::Job(input) => Job::from_input(*input, &self.settings.limits)?
                .hash()
                .to_string(),
            BindContent::Hash(h) => JobHash::parse(&h)
                .map_err(|e| Refusal::field(Reason::InvalidArgument, "job_hash", e.message))?
                .to_string(),
        };
        let now = self.now();
        // Only the snapshot the job was decided under can pass (any other is
        // refused as a mismatch before revocation counts), so the named
        // snapshot's revocation is read without reading the job first.
        let revoked = self
            .store
            .snapshot(snapshot_id)
            .await
            .map_err(unavailable)?
            .is_some_and(|s| s.revoked_at.is_some());
        let active = self.active().map(|s| s.id.to_string());
        let require_active = if self.settings.require_active_snapshot {
            active
        } else {
            None
        };
        let bind_id = uuid::Uuid::now_v7().to_string();
        let (who2, snapshot_id2, bind_id2, presented2) = (
            who.clone(),
            snapshot_id.to_owned(),
            bind_id.clone(),
            presented.clone(),
        );
        let result = self
            .run(
                job_id,
                "bind",
                Box::new(move |r| {
                    approval::bind(
                        r,
                        &who2,
                        &BindInput {
                            job_hash: &presented2,
                            snapshot_id: &snapshot_id2,
                            snapshot_revoked: revoked,
                            require_active: require_active.as_deref(),
                            bind_id: bind_id2,
                        },
                        now,
                    )
                }),
            )
            .await;
        let record = match result {
            Err(refusal) if refusal.reason == Reason::NotFound => {
                // A refused bind is audited, even for a job that does not exist.
                let ev = approval::AuditEvent {
                    kind: "bind_refused",
                    actor: who.name.clone(),
                    job_id: job_id.to_owned(),
                    snapshot_id: snapshot_id.to_owned(),
                    body: serde_json::json!({ "reason": Reason::NotFound.as_str(), "presented_job_hash": presented }),
                };
                self.store
                    .append_audit(ev, now)
                    .await
                    .map_err(unavailable)?;
                return Err(refusal);
            }
            other => other?,
        };
        let approvers: Vec<&str> = record
            .approvals
            .iter()
            .map(|a| a.approver.as_str())
            .collect();
        let constraints = serde_json::to_value(&record.evaluation.constraints).unwrap_or_default();
        let receipt = self.signer.sign(&crate::receipt::payload(
            &record.job_id,
            &record.job_hash,
            &record.snapshot_id,
            record.evaluation.decision.as_str(),
            &bind_id,
            &approvers,
            &constraints,
            now.div_euclid(1000),
        ));
        Ok(Bound {
            record,
            bind_id,
            receipt,
        })
    }

    /// The public key receipts are signed with, as JWKS.
    pub fn jwks(&self) -> serde_json::Value {
        self.signer.jwks()
    }

    pub async fn report_outcome(
        &self,
        who: &Identity,
        job_id: &str,
        bind_id: &str,
        succeeded: bool,
        detail: &str,
    ) -> Result<JobRecord, Refusal> {
        require(who, EXECUTOR, "ReportOutcome")?;
        let (who2, bind_id, detail, now) = (
            who.clone(),
            bind_id.to_owned(),
            detail.to_owned(),
            self.now(),
        );
        self.run(
            job_id,
            "outcome",
            Box::new(move |r| {
                approval::report_outcome(r, &who2, &bind_id, succeeded, &detail, now)
            }),
        )
        .await
    }

    /// Jobs for the approval queue: pending (and, when asked, resolved).
    pub async fn list_approvals(
        &self,
        who: &Identity,
        q: ListQuery,
    ) -> Result<(Vec<JobRecord>, Option<(i64, String)>), Refusal> {
        let ListQuery {
            include_resolved,
            tenant,
            actionable_only,
            unacknowledged_overrides,
            page_size,
            after,
        } = q;
        if !oversees_approvals(who) {
            return Err(Refusal::new(
                Reason::PermissionDenied,
                format!("`{}` holds no approver role", who.name),
            ));
        }
        let limit = i64::from(if page_size == 0 {
            100
        } else {
            page_size.min(500)
        });
        let states = if include_resolved || unacknowledged_overrides {
            vec![]
        } else {
            vec![JobState::Pending]
        };
        let now = self.now();
        let mut out = Vec::new();
        let mut cursor = after;
        // Filtering happens after the query (effective expiry, eligibility),
        // so read until a page is full or the table is exhausted.
        loop {
            let batch = self
                .store
                .jobs(&JobFilter {
                    states: states.clone(),
                    tenant: tenant.clone(),
                    after: cursor.clone(),
                    limit,
                    unacknowledged_overrides,
                })
                .await
                .map_err(unavailable)?;
            let exhausted = (batch.len() as i64) < limit;
            for r in batch {
                cursor = Some((r.created_at, r.job_id.clone()));
                let keep = (include_resolved
                    || unacknowledged_overrides
                    || r.effective_state(now) == JobState::Pending)
                    && (!actionable_only || approval::may_act_on(&r, who, now))
                    && (include_resolved
                        || unacknowledged_overrides
                        || r.evaluation.approval_required);
                if keep {
                    out.push(r);
                    if out.len() as i64 == limit {
                        return Ok((out, cursor));
                    }
                }
            }
            if exhausted {
                return Ok((out, None));
            }
        }
    }

    // ------------------------------------------------------------ policy

    pub async fn reload_policy(
        &self,
        who: &Identity,
        source: &str,
        file: &str,
        dry_run: bool,
    ) -> Result<Reloaded, Refusal> {
        require(who, OPERATOR, "ReloadPolicy")?;
        if dry_run {
            let (snap, warnings) = self.validate_policy(source, file).await?;
            let existing = self
                .store
                .snapshot(snap.id.as_str())
                .await
                .map_err(unavailable)?;
            let unchanged = self.active().is_some_and(|a| a.id == snap.id);
            return Ok(Reloaded {
                snapshot: existing.unwrap_or_else(|| snapshot_row(&snap, self.now())),
                activated: false,
                unchanged,
                warnings,
            });
        }
        let out = self.activate_source(source, file, &who.name).await?;
        tracing::info!(snapshot = %out.snapshot.id, by = %who.name, unchanged = out.unchanged, "policy reloaded");
        Ok(out)
    }

    pub async fn get_policy(
        &self,
        who: &Identity,
        snapshot_id: &str,
    ) -> Result<SnapshotView, Refusal> {
        require(who, OPERATOR, "GetPolicy")?;
        let active = self.active().map(|s| s.id.to_string());
        let id = if snapshot_id.is_empty() {
            active
                .clone()
                .ok_or_else(|| Refusal::new(Reason::NotFound, "no active snapshot"))?
        } else {
            snapshot_id.to_owned()
        };
        let row = self
            .store
            .snapshot(&id)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| Refusal::new(Reason::NotFound, format!("no snapshot `{id}`")))?;
        Ok(SnapshotView {
            active: active.as_deref() == Some(row.id.as_str()),
            row,
        })
    }

    pub async fn list_snapshots(
        &self,
        who: &Identity,
        name: Option<&str>,
    ) -> Result<Vec<SnapshotView>, Refusal> {
        require(who, OPERATOR, "ListSnapshots")?;
        let active = self.active().map(|s| s.id.to_string());
        let rows = self.store.snapshots(name).await.map_err(unavailable)?;
        Ok(rows
            .into_iter()
            .map(|row| SnapshotView {
                active: active.as_deref() == Some(row.id.as_str()),
                row,
            })
            .collect())
    }

    pub async fn revoke_snapshot(
        &self,
        who: &Identity,
        snapshot_id: &str,
        reason: &str,
    ) -> Result<SnapshotView, Refusal> {
        require(who, OPERATOR, "RevokeSnapshot")?;
        SnapshotId::parse(snapshot_id)
            .map_err(|e| Refusal::field(Reason::InvalidArgument, "snapshot_id", e))?;
        if reason.trim().is_empty() {
            return Err(Refusal::field(
                Reason::ReasonRequired,
                "reason",
                "a reason is required",
            ));
        }
        if self.active().is_some_and(|a| a.id.as_str() == snapshot_id) {
            return Err(Refusal::new(
                Reason::InvalidArgument,
                "the active snapshot cannot be revoked; activate another one first",
            ));
        }
        let row = self
            .store
            .revoke_snapshot(snapshot_id, &who.name, reason, self.now())
            .await
            .map_err(unavailable)?
            .ok_or_else(|| {
                Refusal::new(Reason::NotFound, format!("no snapshot `{snapshot_id}`"))
            })?;
        Ok(SnapshotView { row, active: false })
    }

    /// Explain: evaluate without recording. Operators may evaluate as another
    /// principal; everyone else is evaluated as themselves.
    pub async fn explain(
        &self,
        who: &Identity,
        input: JobInput,
        principal: &str,
        snapshot_id: &str,
    ) -> Result<(policy::Explanation, JobHash, SnapshotId), Refusal> {
        let principal = if principal.is_empty() || principal == who.name {
            who.name.clone()
        } else {
            require(who, OPERATOR, "Explain as another principal")?;
            principal.to_owned()
        };
        let job = Job::from_input(input, &self.settings.limits)?;
        let snap = if snapshot_id.is_empty() {
            self.active()
                .ok_or_else(|| Refusal::new(Reason::Unavailable, "no active policy"))?
        } else {
            let row = self
                .store
                .snapshot(snapshot_id)
                .await
                .map_err(unavailable)?
                .ok_or_else(|| {
                    Refusal::new(Reason::NotFound, format!("no snapshot `{snapshot_id}`"))
                })?;
            self.compiled_snapshot(&row).await?
        };
        Ok((
            snap.policy.explain(&job, Some(&principal)),
            job.hash(),
            snap.id.clone(),
        ))
    }

    // ------------------------------------------------------------ audit

    pub async fn job_history(
        &self,
        who: &Identity,
        job_id: &str,
    ) -> Result<Vec<AuditEntry>, Refusal> {
        require(who, AUDITOR, "GetJobHistory")?;
        job_id_arg(job_id)?;
        let entries = self
            .store
            .audit_for_job(job_id)
            .await
            .map_err(unavailable)?;
        if entries.is_empty() {
            return Err(not_found(job_id));
        }
        Ok(entries)
    }

    /// Recomputes every chain; names the first bad entry of each.
    pub async fn verify_audit(&self, who: &Identity) -> Result<Verification, Refusal> {
        require(who, AUDITOR, "VerifyAudit")?;
        let mut chains = Vec::new();
        for chain in self.store.chains().await.map_err(unavailable)? {
            let mut v = ChainVerifier::new(&chain);
            let mut after = 0;
            loop {
                let page = self
                    .store
                    .audit_page(&chain, after, 5000)
                    .await
                    .map_err(unavailable)?;
                let Some(last) = page.last() else { break };
                after = last.seq;
                for e in &page {
                    v.push(e);
                }
            }
            chains.push(v.finish());
        }
        Ok(Verification {
            ok: chains.iter().all(|c| c.ok),
            entries: chains.iter().map(|c| c.entries).sum(),
            chains,
        })
    }

    /// One page of a chain's entries (for export).
    pub async fn audit_page(
        &self,
        who: &Identity,
        chain: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, Refusal> {
        require(who, AUDITOR, "ExportAudit")?;
        self.store
            .audit_page(chain, after_seq, limit)
            .await
            .map_err(unavailable)
    }

    pub async fn audit_chains(&self, who: &Identity) -> Result<Vec<String>, Refusal> {
        require(who, AUDITOR, "ExportAudit")?;
        self.store.chains().await.map_err(unavailable)
    }

    // ------------------------------------------------------------ time

    /// Expires jobs past their deadline and escalates jobs past their SLA.
    /// Returns (expired, escalated). Safe to run concurrently: each change is
    /// a guarded transition, so a job is expired or escalated once.
    pub async fn sweep(&self) -> Result<(usize, usize), Refusal> {
        let now = self.now();
        let ids = self.store.due(now, 1000).await.map_err(unavailable)?;
        let (mut expired, mut escalated) = (0, 0);
        for id in ids {
            if self
                .sweep_step(&id, now, "expiry", approval::expire)
                .await?
            {
                expired += 1;
                tracing::info!(job_id = %id, "job expired");
            } else if self
                .sweep_step(&id, now, "escalation", approval::escalate)
                .await?
            {
                escalated += 1;
                tracing::warn!(job_id = %id, "job escalated past its SLA");
            }
        }
        Ok((expired, escalated))
    }

    /// One sweep transition; false when it does not apply (any more).
    async fn sweep_step(
        &self,
        id: &str,
        now: i64,
        kind: &'static str,
        step: fn(&JobRecord, i64) -> Result<Transition, Refused>,
    ) -> Result<bool, Refusal> {
        match self
            .store
            .transition(id, now, Box::new(move |r| step(r, now)))
            .await
        {
            Ok(r) => {
                self.publish(kind, &r);
                Ok(true)
            }
            Err(TransitionError::Refused(_)) | Err(TransitionError::NotFound) => Ok(false),
            Err(TransitionError::Store(e)) => Err(unavailable(e)),
        }
    }
}

/// Loads a policy on a blocking thread: compiling a large policy takes
/// hundreds of milliseconds, which must not stall the request threads.
async fn load_off_thread(
    source: &str,
    file: &str,
) -> Result<Result<policy::Loaded, policy::PolicyError>, Refusal> {
    let (source, file) = (source.to_owned(), file.to_owned());
    tokio::task::spawn_blocking(move || policy::load(&source, &file))
        .await
        .map_err(|_| Refusal::new(Reason::Internal, "policy validation was interrupted"))
}

/// How often replicas re-check the active snapshot when no notification
/// arrives (the backstop for LISTEN/NOTIFY).
const SNAPSHOT_POLL: std::time::Duration = std::time::Duration::from_millis(500);

/// Follows other replicas: snapshot activations and job changes from the
/// store's notifications, plus polling. Ends when the engine is dropped.
async fn follow_changes(engine: std::sync::Weak<Engine>) {
    let mut events = match engine.upgrade() {
        Some(e) => e.store.listen().await,
        None => return,
    };
    let mut tick = tokio::time::interval(SNAPSHOT_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let event = match &mut events {
            Some(rx) => tokio::select! {
                ev = rx.recv() => match ev {
                    Some(ev) => Some(ev),
                    None => {
                        // The listener is gone: polling alone from now on.
                        events = None;
                        None
                    }
                },
                _ = tick.tick() => None,
            },
            None => {
                tick.tick().await;
                None
            }
        };
        let Some(engine) = engine.upgrade() else {
            return;
        };
        match event {
            Some(crate::store::StoreEvent::Job { id, kind, version }) => {
                engine.republish(&id, &kind, version).await
            }
            Some(crate::store::StoreEvent::Snapshot(_)) | None => engine.refresh_active().await,
        }
    }
}

/// The stored decision for a repeated job id, or ALREADY_EXISTS.
fn replay(existing: JobRecord, hash: &JobHash, who: &Identity) -> Result<Decided, Refusal> {
    if existing.job_hash != hash.as_str() {
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
        record: existing,
        replayed: true,
    })
}

fn snapshot_row(s: &Snapshot, now: i64) -> SnapshotRow {
    SnapshotRow {
        id: s.id.to_string(),
        name: s.name().to_owned(),
        sha256: s.id.sha256().to_owned(),
        version: None,
        source: s.source.clone(),
        canonical_json: s.canonical_json.clone(),
        rule_count: s.policy.rules().len() as i64,
        created_at: now,
        activated_at: None,
        activated_by: None,
        revoked_at: None,
        revoked_by: None,
        revoke_reason: None,
    }
}

/// The group-commit writer: takes whatever decisions are waiting (up to
/// `max_batch`) and records them in one transaction, so concurrent
/// decisions share one fsync. Each waits for its own commit.
async fn decision_writer(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<PendingDecision>,
    max_batch: usize,
) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (records, replies): (Vec<JobRecord>, Vec<_>) =
            batch.into_iter().map(|p| (p.record, p.reply)).unzip();
        match store.record_decisions(records).await {
            Ok(results) => {
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(result));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for reply in replies {
                    let _ = reply.send(Err(msg.clone()));
                }
            }
        }
    }
}
