//! The PostgreSQL store, shared by several gavel replicas. The same
//! operations as SQLite; what differs is locking and announcing: each write
//! runs in its own transaction that locks the job row (`FOR UPDATE`) and
//! this replica's audit-chain head, activations are serialised across
//! replicas by an advisory lock, and every change is announced with
//! `NOTIFY gavel_events` so other replicas switch snapshots and update
//! watchers at once.

use super::backend::{Backend, Stored, invalid_url, migrate};
use super::effects::{Dialect, Effects};
use super::rows::job_columns;
use super::writes::Write;
use super::{StoreError, StoreEvent, StoreOptions};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgPool, Postgres};
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::mpsc;

/// The channel changes are announced on, as a literal for the SQL.
macro_rules! channel {
    () => {
        "gavel_events"
    };
}

/// The channel changes are announced on.
pub const CHANNEL: &str = channel!();

/// A job's approvals as one JSON column, so a job is read in one statement.
macro_rules! approvals_json {
    () => {
        "(SELECT COALESCE(json_agg(json_build_object('approver', approver, 'roles', roles::json, 'reason', reason, 'note', note, 'channel', channel, 'at', at, 'job_hash', job_hash, 'snapshot_id', snapshot_id) ORDER BY at, approver), '[]'::json)::text FROM approvals a WHERE a.job_id = jobs.job_id) AS approvals_json"
    };
}

macro_rules! job_by_id {
    () => {
        concat!(
            "SELECT ",
            job_columns!(),
            ", ",
            approvals_json!(),
            " FROM jobs WHERE job_id = $1"
        )
    };
}

static DIALECT: Dialect = Dialect {
    job: job_by_id!(),
    job_for_update: concat!(job_by_id!(), " FOR UPDATE OF jobs"),
    jobs: concat!(
        "SELECT ",
        job_columns!(),
        ", ",
        approvals_json!(),
        " FROM jobs \
         WHERE ($1 = '[]' OR state IN (SELECT json_array_elements_text($1::json))) \
           AND ($2::TEXT IS NULL OR tenant = $2) \
           AND (created_at, job_id) > ($3, $4) \
           AND (NOT $5 OR (overridden AND override_ack_by IS NULL)) \
         ORDER BY created_at, job_id LIMIT $6"
    ),
    ensure_audit_head: Some(
        "INSERT INTO audit_heads (chain, seq, head_hash) VALUES ($1, 0, $2) ON CONFLICT (chain) DO NOTHING",
    ),
    audit_head: "SELECT seq, head_hash FROM audit_heads WHERE chain = $1 FOR UPDATE",
    lock_activation: Some("SELECT pg_advisory_xact_lock(727274701)"),
    notify: Some(concat!("SELECT pg_notify('", channel!(), "', $1)")),
};

/// Writes run in transactions of their own on the pool.
pub(crate) struct PgWriter {
    pool: PgPool,
    chain: String,
}

/// Connects to `url` (`postgres://…`), applies migrations (serialised
/// across replicas by sqlx's migration lock), and appends audit entries
/// to `chain`.
pub(crate) async fn open(
    url: &str,
    chain: &str,
    store: StoreOptions,
) -> Result<Stored<PgWriter>, StoreError> {
    let mut options = PgConnectOptions::from_str(url).map_err(invalid_url)?;
    // The server ends a session left idle inside a transaction (its
    // replica crashed or was cut off) after half the timeout, which
    // releases its locks while the replicas waiting for them still wait.
    const IDLE: &str = "idle_in_transaction_session_timeout";
    if !options.get_options().is_some_and(|o| o.contains(IDLE)) {
        let idle = (store.timeout / 2).as_millis().max(1);
        options = options.options([(IDLE, format!("{idle}ms"))]);
    }
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(store.timeout)
        .connect_with(options)
        .await?;
    migrate(&pool, sqlx::migrate!("migrations/postgres")).await?;
    // gavel answers once PostgreSQL says committed; with this off the
    // server says so before the commit is on disk.
    let commit: Result<String, _> = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&pool)
        .await;
    if commit.is_ok_and(|c| c == "off") {
        tracing::warn!(
            "PostgreSQL has synchronous_commit = off: writes gavel acknowledged can be lost if the database server crashes"
        );
    }
    Ok(Stored {
        timeout: store.timeout,
        reads: pool.clone(),
        writes: PgWriter {
            pool,
            chain: chain.to_owned(),
        },
    })
}

impl Backend for PgWriter {
    type Db = Postgres;
    const DIALECT: &'static Dialect = &DIALECT;

    /// Each write is its own transaction: replicas lock rows, not a process.
    async fn submit(&self, write: Write) {
        let mut tx = match self.pool.begin().await {
            Ok(tx) => tx,
            Err(e) => return write.fail(&e.into()),
        };
        let mut fx = Effects::new(&self.chain);
        let Ok(done) = write.run(&mut *tx, &DIALECT, &mut fx).await else {
            // Already answered with the error; dropping `tx` rolls back.
            return;
        };
        let committed = match fx.flush(&mut *tx, &DIALECT).await {
            Ok(()) => tx.commit().await.map_err(StoreError::from),
            Err(e) => Err(e),
        };
        match committed {
            Ok(()) => done.succeed(),
            Err(e) => done.fail(&e),
        }
    }

    fn batches_writes(&self) -> bool {
        false
    }

    async fn listen(&self) -> Option<mpsc::Receiver<StoreEvent>> {
        let (tx, rx) = mpsc::channel(1024);
        let pool = self.pool.clone();
        tokio::spawn(async move {
            // Reconnect on failure; polling in the engine covers the gaps.
            loop {
                let mut listener = match PgListener::connect_with(&pool).await {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(error = %e, "LISTEN connection failed; retrying");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                        continue;
                    }
                };
                if let Err(e) = listener.listen(CHANNEL).await {
                    tracing::warn!(error = %e, "LISTEN failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
                loop {
                    let received = tokio::select! {
                        r = listener.recv() => r,
                        _ = tx.closed() => return,
                    };
                    match received {
                        Ok(n) => {
                            let Some(event) = StoreEvent::parse(n.payload()) else {
                                continue;
                            };
                            if tx.send(event).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "LISTEN connection lost; reconnecting");
                            break;
                        }
                    }
                }
            }
        });
        Some(rx)
    }
}
