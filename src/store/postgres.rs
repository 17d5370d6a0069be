//! The PostgreSQL store, shared by several gavel replicas. The same
//! operations as SQLite; what differs is locking and announcing.
//!
//! Each replica has one writer, as SQLite has one writer thread: a thread
//! with a connection of its own, which takes the decisions and transitions
//! waiting and runs them in one transaction (group commit: one commit, and
//! one lock of this replica's audit-chain head, for the lot). Other
//! replicas write the same rows at the same time, so the transaction first
//! reads and locks every job its transitions name, in one statement and in
//! job id order (`FOR UPDATE`), and inserts new jobs in job id order: two
//! replicas' batches then wait for each other in one order, never in a
//! cycle, and a transition needs no read of its own. Should a batch fail
//! all the same (a deadlock PostgreSQL broke, one write's error), its
//! writes run again each in a transaction of its own before anyone is
//! answered. Activations (serialised across replicas by an advisory lock),
//! revocations, sessions and deliveries always run in transactions of
//! their own. Every commit announces its changes with one
//! `NOTIFY gavel_events` statement, so other replicas switch snapshots and
//! update watchers at once. Reads use a pool.

use super::backend::{Backend, Stored, invalid_url, migrate};
use super::effects::Dialect;
use super::rows::job_columns;
use super::writes::{Failed, Write, merge_decisions, run_together};
use super::{StoreError, StoreEvent, StoreOptions};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Postgres};
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
    lock_jobs: Some(concat!(
        "SELECT ",
        job_columns!(),
        ", ",
        approvals_json!(),
        " FROM jobs WHERE job_id IN (SELECT json_array_elements_text($1::json)) ORDER BY job_id FOR UPDATE OF jobs"
    )),
    notify: Some(concat!(
        "SELECT pg_notify('",
        channel!(),
        "', p) FROM json_array_elements_text($1::json) AS p"
    )),
};

/// The most writes committed together.
const MAX_BATCH: usize = 512;

/// Writes go to this replica's writer task.
pub(crate) struct PgWriter {
    writes: mpsc::Sender<Write>,
    pool: PgPool,
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
        .connect_with(options.clone())
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
    let (writes, rx) = mpsc::channel(4096);
    let chain = chain.to_owned();
    let timeout = store.timeout;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| StoreError::Unavailable(format!("starting the PostgreSQL writer: {e}")))?;
    std::thread::Builder::new()
        .name("gavel-pg-writer".into())
        .spawn(move || runtime.block_on(writer(options, timeout, chain, rx)))
        .map_err(|e| StoreError::Unavailable(format!("starting the PostgreSQL writer: {e}")))?;
    Ok(Stored {
        timeout: store.timeout,
        reads: pool.clone(),
        writes: PgWriter { writes, pool },
    })
}

impl Backend for PgWriter {
    type Db = Postgres;
    const DIALECT: &'static Dialect = &DIALECT;

    async fn submit(&self, write: Write) {
        if let Err(mpsc::error::SendError(write)) = self.writes.send(write).await {
            write.fail(&StoreError::Unavailable(
                "the database writer has stopped".into(),
            ));
        }
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

/// The writer: a thread of its own with a connection of its own, so that
/// its round trips to the database wait neither for the server's request
/// tasks nor for the pool. It commits the decisions and transitions
/// waiting in one transaction, then whatever else waited, each in a
/// transaction of its own; it ends when the store is dropped.
async fn writer(
    options: PgConnectOptions,
    timeout: Duration,
    chain: String,
    mut rx: mpsc::Receiver<Write>,
) {
    let mut w = Writer {
        options,
        timeout,
        chain,
        conn: None,
    };
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (together, alone): (Vec<_>, Vec<_>) = merge_decisions(std::mem::take(&mut batch))
            .into_iter()
            .partition(Write::shares);
        if !together.is_empty() {
            w.settle(together).await;
        }
        for one in alone {
            w.settle(vec![one]).await;
        }
    }
}

struct Writer {
    options: PgConnectOptions,
    /// How long connecting may take.
    timeout: Duration,
    chain: String,
    /// Closed after a failed transaction; the next one connects again.
    conn: Option<PgConnection>,
}

impl Writer {
    /// Runs `writes` in one transaction. Should it fail once begun, each
    /// write runs again in a transaction of its own before anyone is
    /// answered, so that one write's error (or a deadlock another process
    /// caused) fails that write alone. Writes whose callers gave up
    /// meanwhile are skipped; once the database stops answering, the rest
    /// fail with its error.
    async fn settle(&mut self, writes: Vec<Write>) {
        let Err(failed) = self.attempt(writes).await else {
            return;
        };
        let retry =
            failed.began && failed.writes.len() > 1 && !matches!(failed.error, StoreError::Full(_));
        if !retry {
            tracing::error!(error = %failed.error, "a write transaction failed and was rolled back");
            failed
                .writes
                .into_iter()
                .for_each(|w| w.fail(&failed.error));
            return;
        }
        tracing::warn!(
            error = %failed.error,
            writes = failed.writes.len(),
            "a write batch failed and was rolled back; running its writes one by one"
        );
        let mut rest = failed.writes.into_iter();
        while let Some(w) = rest.next() {
            if w.abandoned() {
                continue;
            }
            if let Err(f) = self.attempt(vec![w]).await {
                tracing::error!(error = %f.error, "a write failed on its own and was rolled back");
                let unreachable = !f.began;
                f.writes.into_iter().for_each(|w| w.fail(&f.error));
                if unreachable {
                    rest.for_each(|w| w.fail(&f.error));
                    return;
                }
            }
        }
    }

    /// One transaction; a connection whose transaction failed is closed,
    /// not reused (it may still be inside it). A kept connection that
    /// cannot even begin one (the server restarted while it sat idle) is
    /// replaced once, so the first batch after a restart is not refused.
    async fn attempt(&mut self, writes: Vec<Write>) -> Result<(), Failed> {
        let (mut conn, kept) = match self.conn.take() {
            Some(c) => (c, true),
            None => match self.connect().await {
                Ok(c) => (c, false),
                Err(error) => {
                    return Err(Failed {
                        error,
                        writes,
                        began: false,
                    });
                }
            },
        };
        let result = match run_together(&mut conn, &DIALECT, &self.chain, "BEGIN", writes).await {
            Err(f) if kept && !f.began => {
                conn = match self.connect().await {
                    Ok(c) => c,
                    Err(error) => {
                        return Err(Failed {
                            error,
                            writes: f.writes,
                            began: false,
                        });
                    }
                };
                run_together(&mut conn, &DIALECT, &self.chain, "BEGIN", f.writes).await
            }
            other => other,
        };
        if result.is_ok() {
            self.conn = Some(conn);
        }
        result
    }

    async fn connect(&self) -> Result<PgConnection, StoreError> {
        match tokio::time::timeout(self.timeout, PgConnection::connect_with(&self.options)).await {
            Ok(c) => Ok(c?),
            Err(_) => Err(StoreError::Unavailable(format!(
                "connecting to PostgreSQL took longer than {} ms",
                self.timeout.as_millis()
            ))),
        }
    }
}
