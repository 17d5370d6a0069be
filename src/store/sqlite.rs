//! The SQLite store: one file in WAL mode, `synchronous = FULL` (a commit is
//! on disk before its response is sent), migrations from
//! `migrations/sqlite`.
//!
//! SQLite has one writer, so writes go through one writer task that takes
//! every write waiting (decisions, transitions, audit appends) and runs them
//! in one `BEGIN IMMEDIATE` transaction: concurrent requests share one
//! commit and one fsync (group commit), each still sees the effects of the
//! ones before it, and a failure rolls the whole batch back and fails every
//! request in it. Decisions and audit entries are written with multi-row
//! statements.

use super::*;
use crate::approval::{ApprovalEntry, AuditEvent, JobRecord, JobState};
use crate::audit::{self, AuditEntry};
use crate::canonical::to_jcs;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// A SQLite-backed store.
pub struct SqliteStore {
    pool: SqlitePool,
    /// Held by the writer for each batch and by the rare writes outside it.
    write: Arc<tokio::sync::Mutex<()>>,
    chain: String,
    ops: mpsc::Sender<WriteOp>,
}

/// A write waiting for the writer task.
enum WriteOp {
    Decisions(
        Vec<JobRecord>,
        oneshot::Sender<Result<Vec<Recorded>, StoreError>>,
    ),
    Transition(
        String,
        i64,
        TransitionFn,
        oneshot::Sender<Result<JobRecord, TransitionError>>,
    ),
    Audit(AuditEvent, i64, oneshot::Sender<Result<(), StoreError>>),
}

/// The most writes committed together.
const MAX_BATCH: usize = 256;

const JOB_COLUMNS: &str = "job_id, job_hash, canonical_job, tenant, requester, snapshot_id, decision_id, evaluation, state, version, created_at, updated_at, expires_at, escalate_at, escalated, resolved_by, resolved_comment, resolution, overridden, override_by, override_ack_by, bind_id, bound_at, outcome_detail";

/// A job's approvals as one JSON column, so a job is read in one statement.
const APPROVALS_JSON: &str = "(SELECT json_group_array(json_object('approver', approver, 'roles', json(roles), 'reason', reason, 'note', note, 'channel', channel, 'at', at, 'job_hash', job_hash, 'snapshot_id', snapshot_id)) FROM (SELECT * FROM approvals a WHERE a.job_id = jobs.job_id ORDER BY at, approver)) AS approvals_json";

const SNAPSHOT_COLUMNS: &str = "id, name, sha256, version, source, canonical_json, rule_count, created_at, activated_at, activated_by, revoked_at, revoked_by, revoke_reason";

const AUDIT_COLUMNS: &str =
    "chain, seq, prev_hash, entry_hash, at, actor, job_id, snapshot_id, kind, body";

impl SqliteStore {
    /// Opens (creating if needed) the database at `url` (`sqlite://path`),
    /// applies migrations, and appends audit entries to `chain`.
    pub async fn open(url: &str, chain: &str) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid database url: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrations failed: {e}")))?;
        let write = Arc::new(tokio::sync::Mutex::new(()));
        let (ops, rx) = mpsc::channel(4096);
        tokio::spawn(writer(pool.clone(), chain.to_owned(), write.clone(), rx));
        Ok(SqliteStore {
            pool,
            write,
            chain: chain.to_owned(),
            ops,
        })
    }

    async fn submit<T>(
        &self,
        op: impl FnOnce(oneshot::Sender<T>) -> WriteOp,
    ) -> Result<T, StoreError> {
        let (tx, rx) = oneshot::channel();
        self.ops
            .send(op(tx))
            .await
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))
    }

    /// The pool, for tests that need to reach under the store (tampering).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

fn opt_str(row: &SqliteRow, col: &str) -> Result<Option<String>, sqlx::Error> {
    row.try_get::<Option<String>, _>(col)
}

fn snapshot_from_row(row: &SqliteRow) -> Result<SnapshotRow, StoreError> {
    Ok(SnapshotRow {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        sha256: row.try_get("sha256")?,
        version: row.try_get("version")?,
        source: row.try_get("source")?,
        canonical_json: row.try_get("canonical_json")?,
        rule_count: row.try_get("rule_count")?,
        created_at: row.try_get("created_at")?,
        activated_at: row.try_get("activated_at")?,
        activated_by: opt_str(row, "activated_by")?,
        revoked_at: row.try_get("revoked_at")?,
        revoked_by: opt_str(row, "revoked_by")?,
        revoke_reason: opt_str(row, "revoke_reason")?,
    })
}

fn job_from_row(row: &SqliteRow) -> Result<JobRecord, StoreError> {
    let state: String = row.try_get("state")?;
    let evaluation: String = row.try_get("evaluation")?;
    Ok(JobRecord {
        job_id: row.try_get("job_id")?,
        job_hash: row.try_get("job_hash")?,
        canonical_job: row.try_get("canonical_job")?,
        tenant: row.try_get("tenant")?,
        requester: row.try_get("requester")?,
        snapshot_id: row.try_get("snapshot_id")?,
        decision_id: row.try_get("decision_id")?,
        evaluation: serde_json::from_str(&evaluation)
            .map_err(|e| StoreError::Corrupt(format!("evaluation of a job: {e}")))?,
        state: JobState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown job state `{state}`")))?,
        version: row.try_get("version")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        expires_at: row.try_get("expires_at")?,
        escalate_at: row.try_get("escalate_at")?,
        escalated: row.try_get::<i64, _>("escalated")? != 0,
        resolved_by: opt_str(row, "resolved_by")?,
        resolved_comment: opt_str(row, "resolved_comment")?,
        resolution: opt_str(row, "resolution")?,
        overridden: row.try_get::<i64, _>("overridden")? != 0,
        override_by: opt_str(row, "override_by")?,
        override_ack_by: opt_str(row, "override_ack_by")?,
        bind_id: opt_str(row, "bind_id")?,
        bound_at: row.try_get("bound_at")?,
        outcome_detail: opt_str(row, "outcome_detail")?,
        approvals: match row.try_get::<Option<String>, _>("approvals_json") {
            Ok(Some(text)) => serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("approvals of a job: {e}")))?,
            _ => Vec::new(),
        },
    })
}

fn audit_from_row(row: &SqliteRow) -> Result<AuditEntry, StoreError> {
    let body: String = row.try_get("body")?;
    Ok(AuditEntry {
        chain: row.try_get("chain")?,
        seq: row.try_get("seq")?,
        prev_hash: row.try_get("prev_hash")?,
        entry_hash: row.try_get("entry_hash")?,
        at: row.try_get("at")?,
        actor: row.try_get("actor")?,
        job_id: row.try_get("job_id")?,
        snapshot_id: row.try_get("snapshot_id")?,
        kind: row.try_get("kind")?,
        body: serde_json::from_str(&body)
            .map_err(|e| StoreError::Corrupt(format!("audit body: {e}")))?,
    })
}

async fn load_job(
    conn: &mut SqliteConnection,
    job_id: &str,
) -> Result<Option<JobRecord>, StoreError> {
    let sql = format!("SELECT {JOB_COLUMNS}, {APPROVALS_JSON} FROM jobs WHERE job_id = ?");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(job_id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(job_from_row).transpose()
}

/// Appends one audit entry to `chain` inside the caller's transaction.
async fn append(
    conn: &mut SqliteConnection,
    chain: &str,
    ev: &AuditEvent,
    now: i64,
) -> Result<(), StoreError> {
    let mut audit = PendingAudit::start(conn, chain).await?;
    audit.push(ev, now);
    audit.flush(conn).await
}

fn json_text<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

async fn update_job(
    conn: &mut SqliteConnection,
    r: &JobRecord,
    read_version: i64,
) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE jobs SET state = ?, version = ?, updated_at = ?, expires_at = ?, escalate_at = ?, escalated = ?, resolved_by = ?, resolved_comment = ?, resolution = ?, overridden = ?, override_by = ?, override_ack_by = ?, bind_id = ?, bound_at = ?, outcome_detail = ? \
         WHERE job_id = ? AND version = ?",
    )
    .bind(r.state.as_str())
    .bind(r.version)
    .bind(r.updated_at)
    .bind(r.expires_at)
    .bind(r.escalate_at)
    .bind(i64::from(r.escalated))
    .bind(&r.resolved_by)
    .bind(&r.resolved_comment)
    .bind(&r.resolution)
    .bind(i64::from(r.overridden))
    .bind(&r.override_by)
    .bind(&r.override_ack_by)
    .bind(&r.bind_id)
    .bind(r.bound_at)
    .bind(&r.outcome_detail)
    .bind(&r.job_id)
    .bind(read_version)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() != 1 {
        return Err(StoreError::Conflict);
    }
    Ok(())
}

async fn insert_approval(
    conn: &mut SqliteConnection,
    job_id: &str,
    a: &ApprovalEntry,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO approvals (job_id, approver, roles, reason, note, channel, at, job_hash, snapshot_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(job_id)
    .bind(&a.approver)
    .bind(json_text(&a.roles)?)
    .bind(&a.reason)
    .bind(&a.note)
    .bind(a.channel.as_str())
    .bind(a.at)
    .bind(&a.job_hash)
    .bind(&a.snapshot_id)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The audit chain's head while a batch runs: entries are hashed in
/// memory and written together at the end.
struct PendingAudit {
    chain: String,
    seq: i64,
    head: String,
    rows: Vec<AuditEntry>,
}

impl PendingAudit {
    async fn start(conn: &mut SqliteConnection, chain: &str) -> Result<PendingAudit, StoreError> {
        let head: Option<(i64, String)> =
            sqlx::query_as("SELECT seq, head_hash FROM audit_heads WHERE chain = ?")
                .bind(chain)
                .fetch_optional(&mut *conn)
                .await?;
        let (seq, head) = head.unwrap_or((0, audit::GENESIS.to_owned()));
        Ok(PendingAudit {
            chain: chain.to_owned(),
            seq,
            head,
            rows: Vec::new(),
        })
    }

    fn push(&mut self, ev: &AuditEvent, now: i64) {
        self.seq += 1;
        let hash = audit::entry_hash(
            &self.head,
            &self.chain,
            self.seq,
            now,
            &ev.actor,
            &ev.job_id,
            &ev.snapshot_id,
            ev.kind,
            &ev.body,
        );
        self.rows.push(AuditEntry {
            chain: self.chain.clone(),
            seq: self.seq,
            prev_hash: std::mem::replace(&mut self.head, hash.clone()),
            entry_hash: hash,
            at: now,
            actor: ev.actor.clone(),
            job_id: ev.job_id.clone(),
            snapshot_id: ev.snapshot_id.clone(),
            kind: ev.kind.to_owned(),
            body: ev.body.clone(),
        });
    }

    async fn flush(self, conn: &mut SqliteConnection) -> Result<(), StoreError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        for chunk in self.rows.chunks(1000) {
            let mut qb = QueryBuilder::<Sqlite>::new(
                "INSERT INTO audit (chain, seq, prev_hash, entry_hash, at, actor, job_id, snapshot_id, kind, body) ",
            );
            qb.push_values(chunk, |mut b, e| {
                b.push_bind(&e.chain)
                    .push_bind(e.seq)
                    .push_bind(&e.prev_hash)
                    .push_bind(&e.entry_hash)
                    .push_bind(e.at)
                    .push_bind(&e.actor)
                    .push_bind(&e.job_id)
                    .push_bind(&e.snapshot_id)
                    .push_bind(&e.kind)
                    .push_bind(to_jcs(&e.body));
            });
            qb.build().execute(&mut *conn).await?;
        }
        sqlx::query(
            "INSERT INTO audit_heads (chain, seq, head_hash) VALUES (?, ?, ?) ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, head_hash = excluded.head_hash",
        )
        .bind(&self.chain)
        .bind(self.seq)
        .bind(&self.head)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// Inserts decided jobs with one statement; a job id already stored (or
/// repeated within the batch) is returned as it is stored.
async fn insert_decisions(
    conn: &mut SqliteConnection,
    records: Vec<JobRecord>,
    audit: &mut PendingAudit,
) -> Result<Vec<Recorded>, StoreError> {
    let evaluations: Vec<String> = records
        .iter()
        .map(|r| json_text(&r.evaluation))
        .collect::<Result<_, _>>()?;
    let mut qb = QueryBuilder::<Sqlite>::new(
        "INSERT INTO jobs (job_id, job_hash, canonical_job, tenant, requester, snapshot_id, decision_id, decision, evaluation, state, version, created_at, updated_at, expires_at, escalate_at) ",
    );
    qb.push_values(records.iter().zip(&evaluations), |mut b, (r, eval)| {
        b.push_bind(&r.job_id)
            .push_bind(&r.job_hash)
            .push_bind(&r.canonical_job)
            .push_bind(&r.tenant)
            .push_bind(&r.requester)
            .push_bind(&r.snapshot_id)
            .push_bind(&r.decision_id)
            .push_bind(r.evaluation.decision.as_str())
            .push_bind(eval)
            .push_bind(r.state.as_str())
            .push_bind(r.version)
            .push_bind(r.created_at)
            .push_bind(r.updated_at)
            .push_bind(r.expires_at)
            .push_bind(r.escalate_at);
    });
    qb.push(" ON CONFLICT (job_id) DO NOTHING RETURNING job_id");
    let inserted: std::collections::HashSet<String> = qb
        .build_query_scalar::<String>()
        .fetch_all(&mut *conn)
        .await?
        .into_iter()
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(records.len());
    for r in records {
        let first = seen.insert(r.job_id.clone());
        if first && inserted.contains(&r.job_id) {
            audit.push(&r.decision_event(), r.created_at);
            out.push(Recorded::Inserted(r));
        } else {
            let existing = load_job(conn, &r.job_id)
                .await?
                .ok_or_else(|| StoreError::Corrupt("a conflicting job vanished".into()))?;
            out.push(Recorded::Existing(existing));
        }
    }
    Ok(out)
}

/// One transition inside the batch. Refusals are results, not failures;
/// only a database error fails (and so rolls back) the batch.
async fn run_transition(
    conn: &mut SqliteConnection,
    job_id: &str,
    now: i64,
    f: TransitionFn,
    audit: &mut PendingAudit,
) -> Result<Result<JobRecord, TransitionError>, StoreError> {
    let Some(current) = load_job(conn, job_id).await? else {
        return Ok(Err(TransitionError::NotFound));
    };
    match f(&current) {
        Ok(t) => {
            update_job(conn, &t.record, current.version).await?;
            if let Some(a) = &t.approval {
                insert_approval(conn, job_id, a).await?;
            }
            audit.push(&t.audit, now);
            let mut record = t.record;
            if let Some(a) = t.approval {
                record.approvals = current.approvals;
                record.approvals.push(a);
            }
            Ok(Ok(record))
        }
        Err(refused) => {
            if let Some(ev) = &refused.audit {
                audit.push(ev, now);
            }
            Ok(Err(TransitionError::Refused(refused)))
        }
    }
}

/// A finished write, waiting for the commit before it is answered.
enum Done {
    Decisions(
        oneshot::Sender<Result<Vec<Recorded>, StoreError>>,
        Vec<Recorded>,
    ),
    Transition(
        oneshot::Sender<Result<JobRecord, TransitionError>>,
        Box<Result<JobRecord, TransitionError>>,
    ),
    Audit(oneshot::Sender<Result<(), StoreError>>),
}

impl Done {
    fn fail(self, e: &StoreError) {
        match self {
            Done::Decisions(tx, _) => drop(tx.send(Err(e.clone()))),
            Done::Transition(tx, _) => drop(tx.send(Err(TransitionError::Store(e.clone())))),
            Done::Audit(tx) => drop(tx.send(Err(e.clone()))),
        }
    }

    fn succeed(self) {
        match self {
            Done::Decisions(tx, r) => drop(tx.send(Ok(r))),
            Done::Transition(tx, r) => drop(tx.send(*r)),
            Done::Audit(tx) => drop(tx.send(Ok(()))),
        }
    }
}

impl WriteOp {
    fn fail(self, e: &StoreError) {
        match self {
            WriteOp::Decisions(_, tx) => drop(tx.send(Err(e.clone()))),
            WriteOp::Transition(_, _, _, tx) => {
                drop(tx.send(Err(TransitionError::Store(e.clone()))))
            }
            WriteOp::Audit(_, _, tx) => drop(tx.send(Err(e.clone()))),
        }
    }
}

/// Runs a batch in one transaction. On a database error every write in it
/// fails and nothing is kept.
async fn run_batch(pool: &SqlitePool, chain: &str, ops: Vec<WriteOp>) {
    let mut tx = match pool.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(e) => {
            let e = StoreError::from(e);
            ops.into_iter().for_each(|op| op.fail(&e));
            return;
        }
    };
    let mut done: Vec<Done> = Vec::with_capacity(ops.len());
    let mut failure: Option<StoreError> = None;
    let mut audit = match PendingAudit::start(&mut tx, chain).await {
        Ok(a) => a,
        Err(e) => {
            ops.into_iter().for_each(|op| op.fail(&e));
            return;
        }
    };
    let mut rest = ops.into_iter();
    for op in rest.by_ref() {
        match op {
            WriteOp::Decisions(records, reply) => {
                match insert_decisions(&mut tx, records, &mut audit).await {
                    Ok(r) => done.push(Done::Decisions(reply, r)),
                    Err(e) => {
                        let _ = reply.send(Err(e.clone()));
                        failure = Some(e);
                        break;
                    }
                }
            }
            WriteOp::Transition(id, now, f, reply) => {
                match run_transition(&mut tx, &id, now, f, &mut audit).await {
                    Ok(r) => done.push(Done::Transition(reply, Box::new(r))),
                    Err(e) => {
                        let _ = reply.send(Err(TransitionError::Store(e.clone())));
                        failure = Some(e);
                        break;
                    }
                }
            }
            WriteOp::Audit(ev, now, reply) => {
                audit.push(&ev, now);
                done.push(Done::Audit(reply));
            }
        }
    }
    let result = match failure {
        Some(e) => Err(e),
        None => match audit.flush(&mut tx).await {
            Ok(()) => tx.commit().await.map_err(StoreError::from),
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => done.into_iter().for_each(Done::succeed),
        Err(e) => {
            tracing::error!(error = %e, "a write batch failed and was rolled back");
            done.into_iter().for_each(|d| d.fail(&e));
            rest.for_each(|op| op.fail(&e));
        }
    }
}

/// The writer task: batches whatever writes are waiting.
async fn writer(
    pool: SqlitePool,
    chain: String,
    write: Arc<tokio::sync::Mutex<()>>,
    mut rx: mpsc::Receiver<WriteOp>,
) {
    while let Some(first) = rx.recv().await {
        let mut ops = vec![first];
        while ops.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(op) => ops.push(op),
                Err(_) => break,
            }
        }
        let _w = write.lock().await;
        run_batch(&pool, &chain, ops).await;
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn activate_snapshot(
        &self,
        s: SnapshotRow,
        actor: &str,
        now: i64,
    ) -> Result<(SnapshotRow, bool), StoreError> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let active: Option<String> =
            sqlx::query_scalar("SELECT snapshot_id FROM active_snapshot WHERE singleton = 1")
                .fetch_optional(&mut *tx)
                .await?;
        sqlx::query(
            "INSERT INTO snapshots (id, name, sha256, source, canonical_json, rule_count, created_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&s.id)
        .bind(&s.name)
        .bind(&s.sha256)
        .bind(&s.source)
        .bind(&s.canonical_json)
        .bind(s.rule_count)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let changed = active.as_deref() != Some(s.id.as_str());
        if changed {
            // Versions count first activations per policy name.
            sqlx::query(
                "UPDATE snapshots SET version = (SELECT COALESCE(MAX(version), 0) + 1 FROM snapshots WHERE name = ?), activated_at = ?, activated_by = ? WHERE id = ? AND version IS NULL",
            )
            .bind(&s.name)
            .bind(now)
            .bind(actor)
            .bind(&s.id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO active_snapshot (singleton, snapshot_id, changed_at) VALUES (1, ?, ?) ON CONFLICT (singleton) DO UPDATE SET snapshot_id = excluded.snapshot_id, changed_at = excluded.changed_at",
            )
            .bind(&s.id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let ev = AuditEvent {
                kind: "policy_reload",
                actor: actor.to_owned(),
                job_id: String::new(),
                snapshot_id: s.id.clone(),
                body: serde_json::json!({ "previous": active, "name": s.name, "rules": s.rule_count }),
            };
            append(&mut tx, &self.chain, &ev, now).await?;
        }
        let sql = format!("SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&s.id)
            .fetch_one(&mut *tx)
            .await?;
        let stored = snapshot_from_row(&row)?;
        tx.commit().await?;
        Ok((stored, changed))
    }

    async fn active_snapshot(&self) -> Result<Option<SnapshotRow>, StoreError> {
        let sql = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE id = (SELECT snapshot_id FROM active_snapshot WHERE singleton = 1)"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(snapshot_from_row).transpose()
    }

    async fn snapshot(&self, id: &str) -> Result<Option<SnapshotRow>, StoreError> {
        let sql = format!("SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(snapshot_from_row).transpose()
    }

    async fn snapshots(&self, name: Option<&str>) -> Result<Vec<SnapshotRow>, StoreError> {
        let sql = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE (? IS NULL OR name = ?) ORDER BY name, version IS NULL, version, created_at"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(name)
            .bind(name)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(snapshot_from_row).collect()
    }

    async fn revoke_snapshot(
        &self,
        id: &str,
        actor: &str,
        reason: &str,
        now: i64,
    ) -> Result<Option<SnapshotRow>, StoreError> {
        let _w = self.write.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let done = sqlx::query(
            "UPDATE snapshots SET revoked_at = ?, revoked_by = ?, revoke_reason = ? WHERE id = ? AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(actor)
        .bind(reason)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            let ev = AuditEvent {
                kind: "snapshot_revoked",
                actor: actor.to_owned(),
                job_id: String::new(),
                snapshot_id: id.to_owned(),
                body: serde_json::json!({ "reason": reason }),
            };
            append(&mut tx, &self.chain, &ev, now).await?;
        }
        let sql = format!("SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let out = row.as_ref().map(snapshot_from_row).transpose()?;
        tx.commit().await?;
        Ok(out)
    }

    async fn record_decisions(&self, records: Vec<JobRecord>) -> Result<Vec<Recorded>, StoreError> {
        self.submit(|tx| WriteOp::Decisions(records, tx)).await?
    }

    async fn job(&self, job_id: &str) -> Result<Option<JobRecord>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        load_job(&mut conn, job_id).await
    }

    async fn transition(
        &self,
        job_id: &str,
        now: i64,
        f: TransitionFn,
    ) -> Result<JobRecord, TransitionError> {
        self.submit(|tx| WriteOp::Transition(job_id.to_owned(), now, f, tx))
            .await?
    }

    async fn append_audit(&self, event: AuditEvent, now: i64) -> Result<(), StoreError> {
        self.submit(|tx| WriteOp::Audit(event, now, tx)).await?
    }

    async fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, StoreError> {
        let states: Vec<&str> = filter.states.iter().map(|s| s.as_str()).collect();
        let states_json = json_text(&states)?;
        let (after_at, after_id) = filter
            .after
            .clone()
            .map_or((i64::MIN, String::new()), |(a, b)| (a, b));
        let sql = format!(
            "SELECT {JOB_COLUMNS}, {APPROVALS_JSON} FROM jobs \
             WHERE (? = '[]' OR state IN (SELECT value FROM json_each(?))) \
               AND (? IS NULL OR tenant = ?) \
               AND (created_at > ? OR (created_at = ? AND job_id > ?)) \
               AND (? = 0 OR (overridden = 1 AND override_ack_by IS NULL)) \
             ORDER BY created_at, job_id LIMIT ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&states_json)
            .bind(&states_json)
            .bind(&filter.tenant)
            .bind(&filter.tenant)
            .bind(after_at)
            .bind(after_at)
            .bind(&after_id)
            .bind(i64::from(filter.unacknowledged_overrides))
            .bind(filter.limit.max(1))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    async fn due(&self, now: i64, limit: i64) -> Result<Vec<String>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT job_id FROM jobs WHERE state IN ('pending', 'approved', 'allowed') AND expires_at <= ? \
             UNION SELECT job_id FROM jobs WHERE state = 'pending' AND escalated = 0 AND escalate_at <= ? \
             LIMIT ?",
        )
        .bind(now)
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    async fn audit_for_job(&self, job_id: &str) -> Result<Vec<AuditEntry>, StoreError> {
        let sql =
            format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE job_id = ? ORDER BY at, chain, seq");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(job_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn audit_page(
        &self,
        chain: &str,
        after_seq: i64,
        limit: i64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit WHERE chain = ? AND seq > ? ORDER BY seq LIMIT ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(chain)
            .bind(after_seq)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(audit_from_row).collect()
    }

    async fn chains(&self) -> Result<Vec<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT DISTINCT chain FROM audit ORDER BY chain")
                .fetch_all(&self.pool)
                .await?,
        )
    }
}
