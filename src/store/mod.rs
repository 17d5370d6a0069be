//! Durable state behind one trait: policy snapshots, jobs and approvals, and
//! the audit log. The only place with SQL. Every state change is one
//! transaction that re-reads the job, runs a pure transition from
//! `approval`, writes the result guarded by the version it read, and appends
//! the audit entry in the same transaction.

pub mod postgres;
pub mod sqlite;

use crate::approval::{AuditEvent, JobRecord, JobState, Refused, Transition};
use crate::audit::AuditEntry;
use async_trait::async_trait;

/// A stored policy snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRow {
    pub id: String,
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

/// A store failure. Details are for logs; callers see `UNAVAILABLE` or
/// `INTERNAL` without SQL.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("the job changed concurrently; retry")]
    Conflict,
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Unavailable(e.to_string())
    }
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

/// A change another replica made, announced by the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// This snapshot was activated.
    Snapshot(String),
    /// This job changed to this version, by a transition of this audit kind.
    Job {
        id: String,
        kind: String,
        version: i64,
    },
}

/// A pure transition run inside the store's transaction.
pub type TransitionFn = Box<dyn FnOnce(&JobRecord) -> Result<Transition, Refused> + Send>;

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

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Stores a snapshot if new and makes it the active one, assigning its
    /// version at first activation; audits `policy_reload`. Returns the row
    /// and whether the active snapshot changed.
    async fn activate_snapshot(
        &self,
        snapshot: SnapshotRow,
        actor: &str,
        now: i64,
    ) -> Result<(SnapshotRow, bool), StoreError>;
    async fn active_snapshot(&self) -> Result<Option<SnapshotRow>, StoreError>;
    async fn snapshot(&self, id: &str) -> Result<Option<SnapshotRow>, StoreError>;
    async fn snapshots(&self, name: Option<&str>) -> Result<Vec<SnapshotRow>, StoreError>;
    /// Revokes a snapshot (idempotent) and audits `snapshot_revoked`.
    async fn revoke_snapshot(
        &self,
        id: &str,
        actor: &str,
        reason: &str,
        now: i64,
    ) -> Result<Option<SnapshotRow>, StoreError>;

    /// Records decided jobs in one transaction (group commit), each with its
    /// `decision` audit entry. A job id already stored is left unchanged.
    async fn record_decisions(&self, records: Vec<JobRecord>) -> Result<Vec<Recorded>, StoreError>;
    async fn job(&self, job_id: &str) -> Result<Option<JobRecord>, StoreError>;
    /// Runs `f` on the current record and stores its result, guarded by the
    /// version read, with its audit entry; a refusal's audit entry (refused
    /// binds) is stored too.
    async fn transition(
        &self,
        job_id: &str,
        now: i64,
        f: TransitionFn,
    ) -> Result<JobRecord, TransitionError>;
    /// Appends an audit entry outside any job transition.
    async fn append_audit(&self, event: AuditEvent, now: i64) -> Result<(), StoreError>;
    async fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, StoreError>;
    /// Ids of pending or approved jobs past a deadline, or pending past their
    /// SLA and not yet escalated.
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

    /// Changes made by other processes, when the backend announces them
    /// (PostgreSQL LISTEN/NOTIFY). The engine polls as a backstop either way.
    async fn listen(&self) -> Option<tokio::sync::mpsc::Receiver<StoreEvent>> {
        None
    }
}

/// Opens the store a database URL names: `sqlite://…` or `postgres://…`.
pub async fn open(url: &str, chain: &str) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(
            postgres::PostgresStore::open(url, chain).await?,
        ))
    } else if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(
            sqlite::SqliteStore::open(url, chain).await?,
        ))
    } else {
        // Only the scheme: a URL may hold a password.
        let scheme = url.split("://").next().unwrap_or("");
        Err(StoreError::Unavailable(format!(
            "unsupported database url scheme `{scheme}`: use sqlite://PATH or postgres://…"
        )))
    }
}
