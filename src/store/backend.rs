//! What a backend provides — its dialect and a way to run writes (its
//! locking and transactions) — and the one implementation of [`Store`]
//! on top of it, reading from a pool of the backend's connections.

use super::deliveries::{self, DeliveryOp, DeliveryResult, DeliveryRow};
use super::effects::Dialect;
use super::reads;
use super::writes::{DecisionReplies, SessionOp, Write};
use super::{
    Activated, AuditPosition, JobFilter, OutboxRow, Recorded, SessionRow, SnapshotRow, Store,
    StoreError, StoreEvent, TransitionError,
};
use crate::approval::{Command, JobRecord, Transition};
use crate::audit::AuditEntry;
use crate::policy::{Scope, SnapshotId};
use async_trait::async_trait;
use std::future::Future;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How a database gavel can keep its state in is written to.
pub(crate) trait Backend: Send + Sync + 'static {
    type Db: sqlx::Database<Connection: super::conn::Conn>;

    /// The statements that differ on this database.
    const DIALECT: &'static Dialect;

    /// Runs a write in a transaction (or hands it to the task that does);
    /// the answer goes to the write's reply channel once it is committed
    /// or rolled back.
    fn submit(&self, write: Write) -> impl Future<Output = ()> + Send;

    /// See [`Store::listen`].
    fn listen(&self) -> impl Future<Output = Option<mpsc::Receiver<StoreEvent>>> + Send {
        async { None }
    }
}

/// A database URL the driver could not parse.
pub(crate) fn invalid_url(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(format!("invalid database url: {e}"))
}

/// Applies a backend's migrations (serialised across processes by sqlx's
/// migration lock).
pub(crate) async fn migrate<DB>(
    pool: &sqlx::Pool<DB>,
    migrator: sqlx::migrate::Migrator,
) -> Result<(), StoreError>
where
    DB: sqlx::Database,
    DB::Connection: sqlx::migrate::Migrate,
{
    migrator
        .run(pool)
        .await
        .map_err(|e| StoreError::Unavailable(format!("migrations failed: {e}")))
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the database writer has stopped".into())
}

/// The answer of a submitted write; a dropped reply means it never ran.
async fn answer<T, E: From<StoreError>>(rx: oneshot::Receiver<Result<T, E>>) -> Result<T, E> {
    rx.await.map_err(|_| E::from(stopped()))?
}

/// A store: reads from a pool, writes through the backend, each bounded
/// in time.
pub(crate) struct Stored<B: Backend> {
    pub(crate) reads: sqlx::Pool<B::Db>,
    pub(crate) writes: B,
    /// The longest a read or a write may take before the caller is told
    /// UNAVAILABLE (see [`super::StoreOptions::timeout`]).
    pub(crate) timeout: Duration,
}

#[async_trait]
impl<B: Backend> Store for Stored<B> {
    async fn activate_snapshot(
        &self,
        scope: &Scope,
        snapshot: SnapshotRow,
        actor: &str,
        now: i64,
    ) -> Result<Activated, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.run(
            Write::Activate {
                scope: scope.clone(),
                snapshot: Box::new(snapshot),
                actor: actor.to_owned(),
                now,
                reply,
            },
            rx,
        )
        .await
    }

    async fn active_snapshots(&self) -> Result<Vec<(Scope, SnapshotId)>, StoreError> {
        self.bounded(async {
            let mut c = self.reads.acquire().await?;
            reads::active_snapshots(&mut *c).await
        })
        .await
    }

    async fn snapshot(&self, id: &str) -> Result<Option<SnapshotRow>, StoreError> {
        self.bounded(async {
            let mut c = self.reads.acquire().await?;
            reads::snapshot(&mut *c, id).await
        })
        .await
    }

    async fn snapshot_revoked(&self, id: &str) -> Result<bool, StoreError> {
        self.bounded(async {
            let mut c = self.reads.acquire().await?;
            reads::snapshot_revoked(&mut *c, id).await
        })
        .await
    }

    async fn snapshots(&self, name: Option<&str>) -> Result<Vec<SnapshotRow>, StoreError> {
        self.bounded(async {
            let mut c = self.reads.acquire().await?;
            reads::snapshots(&mut *c, name).await
        })
        .await
    }

    async fn revoke_snapshot(
        &self,
        id: &str,
        tenant: &str,
        actor: &str,
        reason: &str,
        now: i64,
    ) -> Result<Option<SnapshotRow>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.run(
            Write::Revoke {
                id: id.to_owned(),
                tenant: tenant.to_owned(),
                actor: actor.to_owned(),
                reason: reason.to_owned(),
                now,
                reply,
            },
            rx,
        )
        .await
    }

    async fn record_decisions(
        &self,
        decisions: Vec<Transition>,
    ) -> Result<Vec<Recorded>, StoreError> {
        let (reply, rx) = oneshot::channel();
        let count = decisions.len();
        self.run(
            Write::Decisions(decisions, DecisionReplies::one(count, reply)),
            rx,
        )
        .await
    }

    async fn job(&self, job_id: &str) -> Result<Option<JobRecord>, StoreError> {
        self.bounded(async {
            let mut c = self.reads.acquire().await?;
            reads::job(&mut *c, B::DIALECT, job_id).await
        })
        .await
    }

    async fn transition_logged(
        &self,
        job_id: &str,
        command: Command,
        now: i64,
    ) -> Result<(JobRecord, Option<AuditPosition>), TransitionError> {
        let (reply, rx) = oneshot::channel();
        self.run(
            Write::Transition {
                job_id: job_id.to_owned(),
                command: Box::new(command),
                now,
                reply,
            },
            rx,
        )
        .await
    }

    async fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, StoreError> {
        self.bounded(async {
            let mut c = self.reads.acquire().await?;
            reads::jobs(&mut *c, B::DIALECT, filter).await
        })
        .await
    }

    async fn due(&self, now: i64, limit: i64) -> Result<Vec<String>, StoreError> {
        self.bounded(async {
            let mut c = self.reads.acquire().await?;
            reads::due(&mut *c, now, limit).await
        })
        .await
    }

    async fn audit_for_job(&self, job_id: &str) -> Result<Vec<AuditEntry>, StoreError> {
        self.bounded(async {
            let mut c = self.reads.acquire().await?;
            reads::audit_for_job(&mut *c, job_id).await
        })
        .await
    }

    async fn audit_page(
        &self,
        chain: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        self.bounded(async {
            let mut c = self.reads.acquire().await?;
            reads::audit_page(&mut *c, chain, after_seq, limit).await
        })
        .await
    }

    async fn chains(&self) -> Result<Vec<String>, StoreError> {
        self.bounded(async {
            let mut c = self.reads.acquire().await?;
            reads::chains(&mut *c).await
        })
        .await
    }

    async fn audit_last(&self, chain: &str) -> Result<Option<AuditEntry>, StoreError> {
        self.bounded(async {
            let mut c = self.reads.acquire().await?;
            reads::audit_last(&mut *c, chain).await
        })
        .await
    }

    async fn outbox(&self, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        self.bounded(async {
            let mut c = self.reads.acquire().await?;
            reads::outbox(&mut *c, limit).await
        })
        .await
    }

    async fn listen(&self) -> Option<mpsc::Receiver<StoreEvent>> {
        self.writes.listen().await
    }

    async fn unrouted_outbox(&self, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        self.bounded(async {
            let mut c = self.reads.acquire().await?;
            deliveries::unrouted(&mut *c, limit).await
        })
        .await
    }

    async fn route_outbox(
        &self,
        outbox_id: &str,
        channels: Vec<String>,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (_, n) = self
            .delivery_write(DeliveryOp::Route {
                outbox_id: outbox_id.to_owned(),
                channels,
                now,
            })
            .await?;
        Ok(n == 1)
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<DeliveryRow>, StoreError> {
        let (rows, _) = self
            .delivery_write(DeliveryOp::Claim {
                owner: owner.to_owned(),
                now,
                lease_ms,
                limit,
            })
            .await?;
        Ok(rows)
    }

    async fn finish_delivery(
        &self,
        id: &str,
        owner: &str,
        result: DeliveryResult,
        now: i64,
    ) -> Result<bool, StoreError> {
        let (_, n) = self
            .delivery_write(DeliveryOp::Finish {
                id: id.to_owned(),
                owner: owner.to_owned(),
                result,
                now,
            })
            .await?;
        Ok(n == 1)
    }

    async fn slack_message(
        &self,
        job_id: &str,
        channel: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        self.bounded(async {
            let mut c = self.reads.acquire().await?;
            deliveries::slack_message(&mut *c, job_id, channel).await
        })
        .await
    }

    async fn save_slack_message(
        &self,
        job_id: &str,
        channel: &str,
        slack_channel: &str,
        ts: &str,
    ) -> Result<(), StoreError> {
        self.delivery_write(DeliveryOp::SaveSlack {
            job_id: job_id.to_owned(),
            channel: channel.to_owned(),
            slack_channel: slack_channel.to_owned(),
            ts: ts.to_owned(),
        })
        .await
        .map(drop)
    }

    async fn first_sight(
        &self,
        signature: &str,
        now: i64,
        forget_before: i64,
    ) -> Result<bool, StoreError> {
        let (_, n) = self
            .delivery_write(DeliveryOp::Seen {
                signature: signature.to_owned(),
                now,
                forget_before,
            })
            .await?;
        Ok(n == 1)
    }

    async fn deliveries(&self, state: &str, limit: i64) -> Result<Vec<DeliveryRow>, StoreError> {
        self.bounded(async {
            let mut c = self.reads.acquire().await?;
            deliveries::list(&mut *c, state, limit).await
        })
        .await
    }

    async fn create_session(&self, session: SessionRow) -> Result<(), StoreError> {
        self.session_write(SessionOp::Create(session))
            .await
            .map(drop)
    }

    async fn session(&self, id_hash: &str, now: i64) -> Result<Option<SessionRow>, StoreError> {
        self.bounded(async {
            let mut c = self.reads.acquire().await?;
            reads::session(&mut *c, id_hash, now).await
        })
        .await
    }

    async fn end_session(&self, id_hash: &str) -> Result<(), StoreError> {
        self.session_write(SessionOp::End(id_hash.to_owned()))
            .await
            .map(drop)
    }

    async fn purge_sessions(&self, now: i64) -> Result<u64, StoreError> {
        self.session_write(SessionOp::Purge(now)).await
    }
}

impl<B: Backend> Stored<B> {
    /// `work`, or UNAVAILABLE once the timeout passes. A write that timed
    /// out may still commit (its transaction is dropped, or on SQLite
    /// still queued): its outcome is unknown, as after a lost connection,
    /// and callers retry with the same job id.
    async fn bounded<T, E: From<StoreError>>(
        &self,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        match tokio::time::timeout(self.timeout, work).await {
            Ok(done) => done,
            Err(_) => Err(E::from(StoreError::Unavailable(format!(
                "the database did not answer within {} ms",
                self.timeout.as_millis()
            )))),
        }
    }

    /// Submits `write` and waits for its answer on `rx`, within the timeout.
    async fn run<T, E: From<StoreError>>(
        &self,
        write: Write,
        rx: oneshot::Receiver<Result<T, E>>,
    ) -> Result<T, E> {
        self.bounded(async {
            self.writes.submit(write).await;
            answer(rx).await
        })
        .await
    }

    async fn delivery_write(&self, op: DeliveryOp) -> Result<(Vec<DeliveryRow>, u64), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.run(Write::Delivery { op, reply }, rx).await
    }

    async fn session_write(&self, op: SessionOp) -> Result<u64, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.run(Write::Session { op, reply }, rx).await
    }
}
