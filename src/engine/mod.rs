//! The engine: one set of operations every door (gRPC now; HTTP, the web
//! page and Slack later) calls after authenticating. It checks who may do
//! what (`access`), evaluates policy against the active snapshot of the
//! job's scope (`snapshots`), records decisions (`decide`), runs
//! [`Command`](crate::approval::Command)s through the store
//! (`transitions`), and answers in door-neutral values (`view`): a door
//! only authenticates and translates.
//!
//! Background work lives beside it: following other replicas (`follow`),
//! expiry and escalation (`sweep`), watch streams (`watch`) and the audit
//! log (`audit`).

mod access;
mod audit;
mod decide;
mod follow;
mod metrics;
mod page;
pub mod resources;
mod snapshots;
mod stats;
mod sweep;
mod transitions;
mod view;
mod watch;

pub use audit::{ExportFilter, Verification, verify_chains};
pub use decide::Decided;
pub use page::{ReviewStats, Session, csrf_matches};
pub use snapshots::{Reloaded, SnapshotView};
pub use transitions::{ApprovalQuery, Approve, BindContent, Bound};
pub use view::{ApprovalView, GateView, JobView};
pub use watch::WatchEvent;

use crate::approval::JobRecord;
use crate::audit::EventKind;
use crate::clock::Clock;
use crate::identity::Directory;
use crate::job::Limits;
use crate::policy::{Scope, Snapshot};
use crate::receipt::ReceiptSigner;
use crate::refusal::{Reason, Refusal};
use crate::store::{Store, StoreError};
use std::sync::Arc;
use tokio::sync::broadcast;

/// Tunables, with defaults that suit a server.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    pub limits: Limits,
    /// Refuse binds with SNAPSHOT_STALE when the job's snapshot is no longer active.
    pub require_active_snapshot: bool,
    /// How long an approver page session lasts.
    pub session_ttl_ms: i64,
    /// The declared tenants (none: single-tenant).
    pub tenancy: crate::tenant::Tenancy,
    /// This replica's id, for its metrics.
    pub replica_id: String,
    /// When approval statistics flag a rubber stamp.
    pub stats: crate::stats::Thresholds,
    /// Per-identity bounds: watch streams, request rate.
    pub resources: resources::Resources,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            limits: Limits::default(),
            require_active_snapshot: false,
            session_ttl_ms: 8 * 3600 * 1000,
            tenancy: Default::default(),
            replica_id: "main".into(),
            stats: crate::stats::Thresholds::default(),
            resources: resources::Resources::default(),
        }
    }
}

/// A policy to activate at start.
#[derive(Debug, Clone)]
pub struct InitialPolicy {
    pub source: String,
    /// The file name findings are reported against.
    pub file: String,
    /// Activate it even when the database has an active snapshot
    /// (`serve --policy`); otherwise only when it has none.
    pub force: bool,
}

/// Everything the engine needs to start.
pub struct EngineSettings {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub directory: Directory,
    pub signer: ReceiptSigner,
    pub policy: Option<InitialPolicy>,
    pub options: EngineOptions,
}

/// A change to a job, for watchers.
#[derive(Debug, Clone)]
pub struct JobChange {
    /// What changed it; `None` when another replica named a kind this one
    /// does not know.
    pub kind: Option<EventKind>,
    pub at: i64,
    pub record: Arc<JobRecord>,
}

/// A page of results and the token for the next one (empty: the last page).
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: String,
}

/// The engine. Cheap to share: hold it in an `Arc`.
pub struct Engine {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    directory: Directory,
    options: EngineOptions,
    snapshots: snapshots::Registry,
    changes: broadcast::Sender<JobChange>,
    signer: ReceiptSigner,
    metrics: metrics::Metrics,
    usage: resources::Usage,
}

/// A store failure as callers see it: the kind, never the SQL.
fn store_refusal(e: StoreError) -> Refusal {
    tracing::error!(error = %e, "store failure");
    match e {
        StoreError::Corrupt(_) => Refusal::new(
            Reason::Internal,
            "stored state could not be read; see the server log",
        ),
        StoreError::Conflict => Refusal::new(
            Reason::Unavailable,
            "the job changed concurrently; nothing was changed, retry",
        ),
        StoreError::Full(_) => Refusal::new(
            Reason::Unavailable,
            "the database is full; nothing was changed",
        ),
        StoreError::Unavailable(_) => Refusal::new(
            Reason::Unavailable,
            "the database is unavailable; nothing was changed",
        ),
    }
}

impl Engine {
    /// Builds the engine and starts its background work. Active snapshots
    /// are read from the store; the initial policy is activated for the
    /// `system` scope when the store has none there, or always when forced.
    pub async fn start(settings: EngineSettings) -> Result<Arc<Engine>, Refusal> {
        let EngineSettings {
            store,
            clock,
            directory,
            signer,
            policy,
            options,
        } = settings;
        let (changes, _) = broadcast::channel(1024);
        let metrics = metrics::Metrics::new(&options.replica_id);
        let engine = Arc::new(Engine {
            metrics,
            store,
            clock,
            directory,
            options,
            snapshots: snapshots::Registry::default(),
            changes,
            signer,
            usage: resources::Usage::default(),
        });
        engine.load_snapshots(policy).await?;
        tokio::spawn(follow::follow_changes(Arc::downgrade(&engine)));
        Ok(engine)
    }

    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// The store, for background workers that read and write it directly.
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn limits(&self) -> &Limits {
        &self.options.limits
    }

    /// This replica's id (its audit chain and metrics name it).
    pub fn replica_id(&self) -> &str {
        &self.options.replica_id
    }

    pub fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// The active snapshot of the `system` scope.
    pub fn active(&self) -> Option<Arc<Snapshot>> {
        self.snapshots.active(&Scope::system())
    }

    /// The active snapshot of a scope.
    pub fn active_in(&self, scope: &Scope) -> Option<Arc<Snapshot>> {
        self.snapshots.active(scope)
    }

    /// Watchers subscribe here for every job change on this replica (and
    /// those other replicas announce).
    pub fn subscribe(&self) -> broadcast::Receiver<JobChange> {
        self.changes.subscribe()
    }

    /// The public key receipts are signed with, as JWKS.
    /// Ready to serve: the database answers and a policy is active.
    pub async fn ready(&self) -> Result<(), Refusal> {
        self.store.active_snapshots().await.map_err(store_refusal)?;
        if self.active().is_none() {
            return Err(Refusal::new(
                Reason::Unavailable,
                "no policy snapshot is active: load one with `gavel policy reload`",
            ));
        }
        Ok(())
    }

    pub fn jwks(&self) -> serde_json::Value {
        self.signer.jwks()
    }

    /// A change this replica made: counted, then told to watchers. (Other
    /// replicas' changes are only published, so nothing counts twice.)
    fn changed_here(&self, kind: EventKind, record: &JobRecord) {
        self.metrics.observe(kind, record);
        self.publish(kind, record);
    }

    fn publish(&self, kind: impl Into<Option<EventKind>>, record: &JobRecord) {
        if self.changes.receiver_count() == 0 {
            return;
        }
        let _ = self.changes.send(JobChange {
            kind: kind.into(),
            at: record.updated_at,
            record: Arc::new(record.clone()),
        });
    }
}
