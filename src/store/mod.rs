//! Durable state behind one trait: policy snapshots and which one each
//! scope has active, jobs and approvals, the audit log and the outbox. The
//! only place with SQL.
//!
//! The logic is written once, in the core (`writes`, `reads`, `effects`,
//! `rows`, `conn`, `backend`): every state change is one transaction that re-reads the
//! job, applies an [`approval::Command`](crate::approval::Command), writes
//! the result guarded by the version it read, and writes the transition's
//! effects (audit entries, outbox messages, change announcements) in the
//! same transaction. `sqlite.rs` and `postgres.rs` keep only their SQL
//! dialect, their locking and their connection handling.

mod backend;
mod conn;
mod deliveries;
mod direct;
mod effects;
mod postgres;
mod reads;
mod rows;
mod sqlite;
mod writes;

pub use deliveries::{DeliveryResult, DeliveryRow};

use crate::approval::{Command, JobRecord, JobState, NotificationKind, Refused, Transition};
use crate::audit::{AuditEntry, EventKind};
use crate::policy::{Scope, SnapshotId};
use async_trait::async_trait;
use std::sync::Arc;

/// A stored policy snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRow {
    pub id: SnapshotId,
    pub name: String,
    pub sha256: String,
    /// Assigned at first activation: 1, 2, 3 … per policy name.
    pub version: Option<i64>,
    pub source: String,
    pub canonical_json: String,
    pub rule_count: i64,
    pub created_at: i64,
    pub activated_at: Option<i64>,
    pub activated_by: Option<String>,
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
    pub revoke_reason: Option<String>,
}

/// The result of activating a snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Activated {
    /// The snapshot as stored, with its version.
    pub snapshot: SnapshotRow,
    /// False when it already was the scope's active snapshot.
    pub changed: bool,
}

/// A store failure, by kind. Details are for logs; callers see
/// `UNAVAILABLE` or `INTERNAL` without SQL. Cloned, not flattened, when one
/// failure fails every write of a batch.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached or did not answer; nothing was kept.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database has no room left; nothing was kept.
    #[error("database full: {0}")]
    Full(String),
    /// What is stored cannot be read back as gavel wrote it.
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// Another writer changed the job between read and write.
    #[error("the job changed concurrently; retry")]
    Conflict,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::ColumnDecode { .. }
            | sqlx::Error::ColumnNotFound(_)
            | sqlx::Error::Decode(_)
            | sqlx::Error::TypeNotFound { .. } => StoreError::Corrupt(e.to_string()),
            // SQLITE_FULL (13) and PostgreSQL's disk_full (53100).
            sqlx::Error::Database(d) if matches!(d.code().as_deref(), Some("13" | "53100")) => {
                StoreError::Full(e.to_string())
            }
            _ => StoreError::Unavailable(e.to_string()),
        }
    }
}

/// Where an audit entry stands: its chain, its seq and its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditPosition {
    pub chain: String,
    pub seq: i64,
    pub entry_hash: String,
}

/// Why a transition did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    #[error("job not found")]
    NotFound,
    #[error("{}", .0.refusal)]
    Refused(Refused),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The result of recording a decided job.
#[derive(Debug, Clone, PartialEq)]
pub enum Recorded {
    /// The job is new and now stored.
    Inserted(JobRecord),
    /// A job with this id was already stored (maybe with another hash).
    Existing(JobRecord),
}

/// A change another process made, announced by the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// A scope activated another snapshot.
    Snapshot { scope: String },
    /// This job changed to this version, by a change of this kind (`None`
    /// when the announcing process named a kind this one does not know).
    Job {
        id: String,
        kind: Option<EventKind>,
        version: i64,
    },
}

impl StoreEvent {
    /// The announcement's text: `snapshot:<scope>` or `job:<kind>:<version>:<job id>`.
    pub fn payload(&self) -> String {
        match self {
            StoreEvent::Snapshot { scope } => format!("snapshot:{scope}"),
            StoreEvent::Job { id, kind, version } => format!(
                "job:{}:{version}:{id}",
                kind.map_or("update", EventKind::as_str)
            ),
        }
    }

    /// Reads an announcement; `None` for text no gavel wrote.
    pub fn parse(payload: &str) -> Option<StoreEvent> {
        match payload.split_once(':')? {
            ("snapshot", scope) => Some(StoreEvent::Snapshot {
                scope: scope.to_owned(),
            }),
            ("job", rest) => {
                let mut parts = rest.splitn(3, ':');
                let (kind, version, id) = (parts.next()?, parts.next()?, parts.next()?);
                Some(StoreEvent::Job {
                    id: id.to_owned(),
                    kind: EventKind::parse(kind),
                    version: version.parse().ok()?,
                })
            }
            _ => None,
        }
    }
}

/// Which jobs to list.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    /// Only these states (none: all).
    pub states: Vec<JobState>,
    pub tenant: Option<String>,
    /// Jobs created strictly after this (created_at, job_id), for paging.
    pub after: Option<(i64, String)>,
    pub limit: i64,
    /// Only overridden jobs not yet acknowledged.
    pub unacknowledged_overrides: bool,
}

/// A signed-in browser on the approver page. The secret itself is only in
/// the browser's cookie; the store keeps its sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    pub id_hash: String,
    /// The person, by identity name.
    pub identity: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A stored outbox message: what must be notified, and how its delivery
/// stands.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// The idempotency key, `<job id>:<job version>:<kind>`.
    pub id: String,
    pub kind: NotificationKind,
    pub job_id: String,
    pub job_version: i64,
    pub tenant: String,
    pub body: serde_json::Value,
    pub created_at: i64,
    /// `pending` until a delivery worker sends it.
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a snapshot if new and makes it the active one of `scope`,
    /// assigning its version at first activation; audits `policy_reload`.
    async fn activate_snapshot(
        &self,
        scope: &Scope,
        snapshot: SnapshotRow,
        actor: &str,
        now: i64,
    ) -> Result<Activated, StoreError>;
    /// Every scope's active snapshot, by id (cheap enough to poll).
    async fn active_snapshots(&self) -> Result<Vec<(Scope, SnapshotId)>, StoreError>;
    async fn snapshot(&self, id: &str) -> Result<Option<SnapshotRow>, StoreError>;
    /// Whether the snapshot `id` is revoked (an unknown one is not),
    /// without reading its texts: what every Bind asks.
    async fn snapshot_revoked(&self, id: &str) -> Result<bool, StoreError>;
    async fn snapshots(&self, name: Option<&str>) -> Result<Vec<SnapshotRow>, StoreError>;
    /// Revokes a snapshot (idempotent) and audits `snapshot_revoked`
    /// under `tenant` (the snapshot's owner; empty for the system's).
    async fn revoke_snapshot(
        &self,
        id: &str,
        tenant: &str,
        actor: &str,
        reason: &str,
        now: i64,
    ) -> Result<Option<SnapshotRow>, StoreError>;

    /// Records decided jobs (from [`approval::decided`](crate::approval::decided))
    /// in one transaction, each with its effects. A job id already stored
    /// is left unchanged and returned as stored.
    async fn record_decisions(
        &self,
        decisions: Vec<Transition>,
    ) -> Result<Vec<Recorded>, StoreError>;
    async fn job(&self, job_id: &str) -> Result<Option<JobRecord>, StoreError>;
    /// Applies `command` to the current record and stores the result,
    /// guarded by the version read, with its effects; a refusal's effects
    /// (refused binds, also of unknown jobs) are stored too. Answers the
    /// new record and where the last audit entry it appended stands.
    async fn transition_logged(
        &self,
        job_id: &str,
        command: Command,
        now: i64,
    ) -> Result<(JobRecord, Option<AuditPosition>), TransitionError>;
    /// [`Store::transition_logged`], the record only.
    async fn transition(
        &self,
        job_id: &str,
        command: Command,
        now: i64,
    ) -> Result<JobRecord, TransitionError> {
        self.transition_logged(job_id, command, now)
            .await
            .map(|(record, _)| record)
    }
    async fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, StoreError>;
    /// Ids of jobs whose deadline has been reached in a state that has one
    /// (pending, approved, allowed), or pending past their SLA and not yet
    /// escalated.
    async fn due(&self, now: i64, limit: i64) -> Result<Vec<String>, StoreError>;

    async fn audit_for_job(&self, job_id: &str) -> Result<Vec<AuditEntry>, StoreError>;
    /// Entries of one chain after `after_seq`, in order.
    async fn audit_page(
        &self,
        chain: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, StoreError>;
    async fn chains(&self) -> Result<Vec<String>, StoreError>;
    /// The last entry of one chain, as the log holds it now.
    async fn audit_last(&self, chain: &str) -> Result<Option<AuditEntry>, StoreError>;

    /// The first `limit` outbox messages, in the order they were written.
    async fn outbox(&self, limit: i64) -> Result<Vec<OutboxRow>, StoreError>;

    /// Outbox rows not yet routed to their channels, oldest first.
    async fn unrouted_outbox(&self, limit: i64) -> Result<Vec<OutboxRow>, StoreError>;
    /// Routes an unrouted outbox row to `channels` (one delivery each) and
    /// marks it routed, in one transaction; false when another worker
    /// routed it first.
    async fn route_outbox(
        &self,
        outbox_id: &str,
        channels: Vec<String>,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// Leases up to `limit` due deliveries to `owner` until `now + lease_ms`.
    async fn claim_deliveries(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, StoreError>;
    /// Records how a send ended; false when the lease was no longer `owner`'s
    /// (another replica took the delivery over), which changes nothing.
    async fn finish_delivery(
        &self,
        id: &str,
        owner: &str,
        result: DeliveryResult,
        now: i64,
    ) -> Result<bool, StoreError>;
    /// The Slack message (Slack channel id, ts) a job got in a gavel channel.
    async fn slack_message(
        &self,
        job_id: &str,
        channel: &str,
    ) -> Result<Option<(String, String)>, StoreError>;
    /// Remembers it; the first one stays.
    async fn save_slack_message(
        &self,
        job_id: &str,
        channel: &str,
        slack_channel: &str,
        ts: &str,
    ) -> Result<(), StoreError>;
    /// True the first time a Slack request signature is seen (across
    /// replicas); signatures seen before `forget_before` are forgotten.
    async fn first_sight(
        &self,
        signature: &str,
        now: i64,
        forget_before: i64,
    ) -> Result<bool, StoreError>;
    /// Deliveries newest first, in one state (`""`: every state).
    async fn deliveries(&self, state: &str, limit: i64) -> Result<Vec<DeliveryRow>, StoreError>;

    /// Stores a new page session.
    async fn create_session(&self, session: SessionRow) -> Result<(), StoreError>;
    /// The session with this id hash, unless it has expired at `now`.
    async fn session(&self, id_hash: &str, now: i64) -> Result<Option<SessionRow>, StoreError>;
    /// Ends a session (sign-out); ending an unknown one changes nothing.
    async fn end_session(&self, id_hash: &str) -> Result<(), StoreError>;
    /// Drops the sessions expired at `now`; answers how many.
    async fn purge_sessions(&self, now: i64) -> Result<u64, StoreError>;

    /// Changes made by other processes, when the backend announces them
    /// (PostgreSQL LISTEN/NOTIFY). The engine polls as a backstop either way.
    async fn listen(&self) -> Option<tokio::sync::mpsc::Receiver<StoreEvent>> {
        None
    }
}

/// How the store uses its database.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StoreOptions {
    /// The longest one read or one write may take, waiting for a
    /// connection included, before the caller is answered UNAVAILABLE. On
    /// PostgreSQL, half of it is the server's
    /// `idle_in_transaction_session_timeout` for gavel's sessions (unless
    /// the URL sets one), so a replica cut off mid-transaction holds its
    /// locks no longer than that: the other replicas waiting for them get
    /// them within their own timeout.
    pub timeout: std::time::Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            timeout: std::time::Duration::from_secs(10),
        }
    }
}

/// Opens the store a database URL names: `sqlite://…` or `postgres://…`.
pub async fn open(url: &str, chain: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_with(url, chain, StoreOptions::default()).await
}

/// [`open`] with options.
pub async fn open_with(
    url: &str,
    chain: &str,
    options: StoreOptions,
) -> Result<Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(postgres::open(url, chain, options).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::open(url, chain, options).await?))
    } else {
        // Only the scheme: a URL may hold a password.
        let scheme = url.split("://").next().unwrap_or("");
        Err(StoreError::Unavailable(format!(
            "unsupported database url scheme `{scheme}`: use sqlite://PATH or postgres://…"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements_round_trip() {
        let events = [
            StoreEvent::Snapshot {
                scope: "system".into(),
            },
            StoreEvent::Job {
                id: "job:with:colons".into(),
                kind: Some(EventKind::BindRefused),
                version: 7,
            },
            StoreEvent::Job {
                id: "j".into(),
                kind: None,
                version: 2,
            },
        ];
        for e in events {
            assert_eq!(StoreEvent::parse(&e.payload()), Some(e));
        }
        assert_eq!(StoreEvent::parse("job:approval:x:j"), None);
        assert_eq!(StoreEvent::parse("other"), None);
    }
}
