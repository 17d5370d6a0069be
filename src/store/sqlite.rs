//! The SQLite store: one file in WAL mode, `synchronous = FULL` (a commit is
//! on disk before its response is sent), migrations from
//! `migrations/sqlite`.
//!
//! SQLite has one writer, so every write goes through one writer thread,
//! which owns a connection of its own (`direct.rs`: rusqlite, prepared
//! statements, no hand-off per statement). It takes all the writes waiting
//! and runs them in one `BEGIN IMMEDIATE` transaction: concurrent requests
//! share one commit and one fsync (group commit; this is the only batching
//! of decisions on SQLite), each still sees the effects of the ones before
//! it, and a failure rolls the whole batch back and fails every write in
//! it. Reads, and the migrations, go through a pool of sqlx connections.

use super::backend::{Backend, Stored, invalid_url, migrate};
use super::direct::{self, Direct};
use super::effects::Dialect;
use super::rows::job_columns;
use super::writes::{Write, merge_decisions, run_together};
use super::{StoreError, StoreEvent, StoreOptions};
use rusqlite::Connection;
use sqlx::Sqlite;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;
use tokio::sync::mpsc;

/// A job's approvals as one JSON column, so a job is read in one statement.
macro_rules! approvals_json {
    () => {
        "(SELECT json_group_array(json_object('approver', approver, 'roles', json(roles), 'reason', reason, 'note', note, 'channel', channel, 'at', at, 'job_hash', job_hash, 'snapshot_id', snapshot_id)) FROM (SELECT * FROM approvals a WHERE a.job_id = jobs.job_id ORDER BY at, approver)) AS approvals_json"
    };
}

const JOB: &str = concat!(
    "SELECT ",
    job_columns!(),
    ", ",
    approvals_json!(),
    " FROM jobs WHERE job_id = $1"
);

static DIALECT: Dialect = Dialect {
    job: JOB,
    // The writer task holds SQLite's only write lock for the whole batch.
    job_for_update: JOB,
    jobs: concat!(
        "SELECT ",
        job_columns!(),
        ", ",
        approvals_json!(),
        " FROM jobs \
         WHERE ($1 = '[]' OR state IN (SELECT value FROM json_each($1))) \
           AND ($2 IS NULL OR tenant = $2) \
           AND (created_at > $3 OR (created_at = $3 AND job_id > $4)) \
           AND (NOT $5 OR (overridden = 1 AND override_ack_by IS NULL)) \
         ORDER BY created_at, job_id LIMIT $6"
    ),
    // One writer: nobody else can start the chain meanwhile.
    ensure_audit_head: None,
    audit_head: "SELECT seq, head_hash FROM audit_heads WHERE chain = $1",
    lock_activation: None,
    lock_jobs: None,
    // One process owns the file: nobody else to tell.
    notify: None,
};

/// The most writes committed together.
const MAX_BATCH: usize = 512;

/// Writes go to the writer thread.
pub(crate) struct SqliteWriter {
    writes: mpsc::Sender<Write>,
}

/// How long a statement waits for a lock another connection holds.
const BUSY: Duration = Duration::from_secs(10);

/// Opens (creating if needed) the database at `url` (`sqlite://path`),
/// applies migrations, and appends audit entries to `chain`.
pub(crate) async fn open(
    url: &str,
    chain: &str,
    store: StoreOptions,
) -> Result<Stored<SqliteWriter>, StoreError> {
    let options = SqliteConnectOptions::from_str(url)
        .map_err(invalid_url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY)
        .foreign_keys(true);
    let path = options.get_filename().to_owned();
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .acquire_timeout(store.timeout)
        .connect_with(options)
        .await?;
    migrate(&pool, sqlx::migrate!("migrations/sqlite")).await?;
    let conn = tokio::task::spawn_blocking({
        let path = path.clone();
        move || direct::open(&path, BUSY)
    })
    .await
    .map_err(|e| StoreError::Unavailable(format!("opening the SQLite writer: {e}")))??;
    let (writes, rx) = mpsc::channel(4096);
    let chain = chain.to_owned();
    std::thread::Builder::new()
        .name("gavel-sqlite-writer".into())
        .spawn(move || writer(path, conn, chain, rx))
        .map_err(|e| StoreError::Unavailable(format!("starting the SQLite writer: {e}")))?;
    Ok(Stored {
        timeout: store.timeout,
        reads: pool,
        writes: SqliteWriter { writes },
    })
}

impl Backend for SqliteWriter {
    type Db = Sqlite;
    const DIALECT: &'static Dialect = &DIALECT;

    async fn submit(&self, write: Write) {
        if let Err(mpsc::error::SendError(write)) = self.writes.send(write).await {
            write.fail(&StoreError::Unavailable(
                "the database writer has stopped".into(),
            ));
        }
    }

    async fn listen(&self) -> Option<mpsc::Receiver<StoreEvent>> {
        None
    }
}

/// The writer thread: commits whatever writes are waiting, together, on
/// its own connection; it ends when the store is dropped.
fn writer(path: PathBuf, conn: Connection, chain: String, mut rx: mpsc::Receiver<Write>) {
    let mut conn = Some(conn);
    let mut shapes = direct::Shapes::new();
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        let writes = merge_decisions(std::mem::take(&mut batch));
        let mut c = match conn.take() {
            Some(c) => c,
            // The last batch failed and its connection was closed.
            None => match direct::open(&path, BUSY) {
                Ok(c) => c,
                Err(e) => {
                    writes.into_iter().for_each(|w| w.fail(&e));
                    continue;
                }
            },
        };
        let mut d = Direct {
            conn: &mut c,
            shapes: &mut shapes,
        };
        let ran = run_together(&mut d, &DIALECT, &chain, "BEGIN IMMEDIATE", writes);
        match direct::finish(ran) {
            Some(Ok(())) => conn = Some(c),
            // On a database error every write in the batch fails and
            // nothing is kept. A failed COMMIT (SQLITE_FULL among others)
            // can leave SQLite inside the transaction with the rollback
            // refused too: closing the connection rolls back whatever is
            // left, and the next batch opens a fresh one.
            Some(Err(failed)) => {
                tracing::error!(error = %failed.error, "a write batch failed and was rolled back");
                failed
                    .writes
                    .into_iter()
                    .for_each(|w| w.fail(&failed.error));
                drop(c)
            }
            None => {
                tracing::error!("a write batch waited on the SQLite writer thread; it was dropped");
                drop(c)
            }
        }
    }
}
