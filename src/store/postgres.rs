//! The PostgreSQL store, shared by several gavel replicas. The same
//! transitions as SQLite: each runs in one transaction that locks the job
//! row (`FOR UPDATE`), writes the result guarded by the version read, and
//! appends to this replica's audit chain (its head row locked). Every
//! change is announced with `NOTIFY gavel_events` so other replicas switch
//! snapshots and update watchers at once.

use super::*;
use crate::approval::{ApprovalEntry, AuditEvent, JobRecord, JobState};
use crate::audit::{self, AuditEntry};
use crate::canonical::to_jcs;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};
use std::str::FromStr;
use std::time::Duration;

/// The channel changes are announced on.
pub const CHANNEL: &str = "gavel_events";

/// A PostgreSQL-backed store.
pub struct PostgresStore {
    pool: PgPool,
    chain: String,
}

const JOB_COLUMNS: &str = "job_id, job_hash, canonical_job, tenant, requester, snapshot_id, decision_id, evaluation, state, version, created_at, updated_at, expires_at, escalate_at, escalated, resolved_by, resolved_comment, resolution, overridden, override_by, override_ack_by, bind_id, bound_at, outcome_detail";

const SNAPSHOT_COLUMNS: &str = "id, name, sha256, version, source, canonical_json, rule_count, created_at, activated_at, activated_by, revoked_at, revoked_by, revoke_reason";

const AUDIT_COLUMNS: &str =
    "chain, seq, prev_hash, entry_hash, at, actor, job_id, snapshot_id, kind, body";

impl PostgresStore {
    /// Connects to `url` (`postgres://…`), applies migrations (serialised
    /// across replicas by sqlx's migration lock), and appends audit entries
    /// to `chain`.
    pub async fn open(url: &str, chain: &str) -> Result<PostgresStore, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Unavailable(format!("invalid database url: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await?;
        sqlx::migrate!("migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrations failed: {e}")))?;
        Ok(PostgresStore {
            pool,
            chain: chain.to_owned(),
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn snapshot_from_row(row: &PgRow) -> Result<SnapshotRow, StoreError> {
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
        activated_by: row.try_get("activated_by")?,
        revoked_at: row.try_get("revoked_at")?,
        revoked_by: row.try_get("revoked_by")?,
        revoke_reason: row.try_get("revoke_reason")?,
    })
}

fn job_from_row(row: &PgRow) -> Result<JobRecord, StoreError> {
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
        escalated: row.try_get("escalated")?,
        resolved_by: row.try_get("resolved_by")?,
        resolved_comment: row.try_get("resolved_comment")?,
        resolution: row.try_get("resolution")?,
        overridden: row.try_get("overridden")?,
        override_by: row.try_get("override_by")?,
        override_ack_by: row.try_get("override_ack_by")?,
        bind_id: row.try_get("bind_id")?,
        bound_at: row.try_get("bound_at")?,
        outcome_detail: row.try_get("outcome_detail")?,
        approvals: Vec::new(),
    })
}

fn audit_from_row(row: &PgRow) -> Result<AuditEntry, StoreError> {
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

async fn load_approvals(conn: &mut PgConnection, job: &mut JobRecord) -> Result<(), StoreError> {
    let rows = sqlx::query(
        "SELECT approver, roles, reason, note, channel, at, job_hash, snapshot_id FROM approvals WHERE job_id = $1 ORDER BY at, approver",
    )
    .bind(&job.job_id)
    .fetch_all(&mut *conn)
    .await?;
    job.approvals = rows
        .iter()
        .map(|r| -> Result<ApprovalEntry, StoreError> {
            let roles: String = r.try_get("roles")?;
            let channel: String = r.try_get("channel")?;
            Ok(ApprovalEntry {
                approver: r.try_get("approver")?,
                roles: serde_json::from_str(&roles)
                    .map_err(|e| StoreError::Corrupt(format!("approval roles: {e}")))?,
                reason: r.try_get("reason")?,
                note: r.try_get("note")?,
                channel: crate::policy::Channel::parse(&channel)
                    .ok_or_else(|| StoreError::Corrupt(format!("channel `{channel}`")))?,
                at: r.try_get("at")?,
                job_hash: r.try_get("job_hash")?,
                snapshot_id: r.try_get("snapshot_id")?,
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(())
}

/// Loads a job; `lock` takes its row lock for the rest of the transaction.
async fn load_job(
    conn: &mut PgConnection,
    job_id: &str,
    lock: bool,
) -> Result<Option<JobRecord>, StoreError> {
    let sql = format!(
        "SELECT {JOB_COLUMNS} FROM jobs WHERE job_id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let row = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(job_id)
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        None => Ok(None),
        Some(row) => {
            let mut job = job_from_row(&row)?;
            load_approvals(conn, &mut job).await?;
            Ok(Some(job))
        }
    }
}

async fn notify(conn: &mut PgConnection, payload: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(payload)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Appends one audit entry to `chain` inside the caller's transaction,
/// holding the chain's head row so appends to one chain never interleave.
async fn append(
    conn: &mut PgConnection,
    chain: &str,
    ev: &AuditEvent,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_heads (chain, seq, head_hash) VALUES ($1, 0, $2) ON CONFLICT (chain) DO NOTHING",
    )
    .bind(chain)
    .bind(audit::GENESIS)
    .execute(&mut *conn)
    .await?;
    let (last, prev): (i64, String) =
        sqlx::query_as("SELECT seq, head_hash FROM audit_heads WHERE chain = $1 FOR UPDATE")
            .bind(chain)
            .fetch_one(&mut *conn)
            .await?;
    let seq = last + 1;
    let hash = audit::entry_hash(
        &prev,
        chain,
        seq,
        now,
        &ev.actor,
        &ev.job_id,
        &ev.snapshot_id,
        ev.kind,
        &ev.body,
    );
    sqlx::query(
        "INSERT INTO audit (chain, seq, prev_hash, entry_hash, at, actor, job_id, snapshot_id, kind, body) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(chain)
    .bind(seq)
    .bind(&prev)
    .bind(&hash)
    .bind(now)
    .bind(&ev.actor)
    .bind(&ev.job_id)
    .bind(&ev.snapshot_id)
    .bind(ev.kind)
    .bind(to_jcs(&ev.body))
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE audit_heads SET seq = $2, head_hash = $3 WHERE chain = $1")
        .bind(chain)
        .bind(seq)
        .bind(&hash)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

fn json_text<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

async fn insert_job(conn: &mut PgConnection, r: &JobRecord) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "INSERT INTO jobs (job_id, job_hash, canonical_job, tenant, requester, snapshot_id, decision_id, decision, evaluation, state, version, created_at, updated_at, expires_at, escalate_at, escalated, overridden) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, FALSE, FALSE) ON CONFLICT (job_id) DO NOTHING",
    )
    .bind(&r.job_id)
    .bind(&r.job_hash)
    .bind(&r.canonical_job)
    .bind(&r.tenant)
    .bind(&r.requester)
    .bind(&r.snapshot_id)
    .bind(&r.decision_id)
    .bind(r.evaluation.decision.as_str())
    .bind(json_text(&r.evaluation)?)
    .bind(r.state.as_str())
    .bind(r.version)
    .bind(r.created_at)
    .bind(r.updated_at)
    .bind(r.expires_at)
    .bind(r.escalate_at)
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

async fn update_job(
    conn: &mut PgConnection,
    r: &JobRecord,
    read_version: i64,
) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE jobs SET state = $1, version = $2, updated_at = $3, expires_at = $4, escalate_at = $5, escalated = $6, resolved_by = $7, resolved_comment = $8, resolution = $9, overridden = $10, override_by = $11, override_ack_by = $12, bind_id = $13, bound_at = $14, outcome_detail = $15 \
         WHERE job_id = $16 AND version = $17",
    )
    .bind(r.state.as_str())
    .bind(r.version)
    .bind(r.updated_at)
    .bind(r.expires_at)
    .bind(r.escalate_at)
    .bind(r.escalated)
    .bind(&r.resolved_by)
    .bind(&r.resolved_comment)
    .bind(&r.resolution)
    .bind(r.overridden)
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
    conn: &mut PgConnection,
    job_id: &str,
    a: &ApprovalEntry,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO approvals (job_id, approver, roles, reason, note, channel, at, job_hash, snapshot_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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

/// Serialises snapshot activation across replicas for one transaction.
async fn lock_activation(conn: &mut PgConnection) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(727274701)")
        .execute(&mut *conn)
        .await?;
    Ok(())
}

#[async_trait]
impl Store for PostgresStore {
    async fn activate_snapshot(
        &self,
        s: SnapshotRow,
        actor: &str,
        now: i64,
    ) -> Result<(SnapshotRow, bool), StoreError> {
        let mut tx = self.pool.begin().await?;
        lock_activation(&mut tx).await?;
        let active: Option<String> =
            sqlx::query_scalar("SELECT snapshot_id FROM active_snapshot WHERE singleton = 1")
                .fetch_optional(&mut *tx)
                .await?;
        sqlx::query(
            "INSERT INTO snapshots (id, name, sha256, source, canonical_json, rule_count, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING",
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
            sqlx::query(
                "UPDATE snapshots SET version = (SELECT COALESCE(MAX(version), 0) + 1 FROM snapshots WHERE name = $1), activated_at = $2, activated_by = $3 WHERE id = $4 AND version IS NULL",
            )
            .bind(&s.name)
            .bind(now)
            .bind(actor)
            .bind(&s.id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO active_snapshot (singleton, snapshot_id, changed_at) VALUES (1, $1, $2) ON CONFLICT (singleton) DO UPDATE SET snapshot_id = excluded.snapshot_id, changed_at = excluded.changed_at",
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
            notify(&mut tx, &format!("snapshot:{}", s.id)).await?;
        }
        let sql = format!("SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE id = $1");
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
        let sql = format!("SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(snapshot_from_row).transpose()
    }

    async fn snapshots(&self, name: Option<&str>) -> Result<Vec<SnapshotRow>, StoreError> {
        let sql = format!(
            "SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE ($1::TEXT IS NULL OR name = $1) ORDER BY name, version IS NULL, version, created_at"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
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
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "UPDATE snapshots SET revoked_at = $1, revoked_by = $2, revoke_reason = $3 WHERE id = $4 AND revoked_at IS NULL",
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
        let sql = format!("SELECT {SNAPSHOT_COLUMNS} FROM snapshots WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let out = row.as_ref().map(snapshot_from_row).transpose()?;
        tx.commit().await?;
        Ok(out)
    }

    async fn record_decisions(&self, records: Vec<JobRecord>) -> Result<Vec<Recorded>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut out = Vec::with_capacity(records.len());
        for r in records {
            if insert_job(&mut tx, &r).await? {
                append(&mut tx, &self.chain, &r.decision_event(), r.created_at).await?;
                out.push(Recorded::Inserted(r));
            } else {
                let existing = load_job(&mut tx, &r.job_id, false)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt("a conflicting job vanished".into()))?;
                out.push(Recorded::Existing(existing));
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    async fn job(&self, job_id: &str) -> Result<Option<JobRecord>, StoreError> {
        let mut conn = self.pool.acquire().await?;
        load_job(&mut conn, job_id, false).await
    }

    async fn transition(
        &self,
        job_id: &str,
        now: i64,
        f: TransitionFn,
    ) -> Result<JobRecord, TransitionError> {
        let mut tx = self.pool.begin().await.map_err(StoreError::from)?;
        let current = load_job(&mut tx, job_id, true)
            .await?
            .ok_or(TransitionError::NotFound)?;
        match f(&current) {
            Ok(t) => {
                update_job(&mut tx, &t.record, current.version).await?;
                if let Some(a) = &t.approval {
                    insert_approval(&mut tx, job_id, a).await?;
                }
                append(&mut tx, &self.chain, &t.audit, now).await?;
                notify(
                    &mut tx,
                    &format!("job:{}:{}:{job_id}", t.audit.kind, t.record.version),
                )
                .await?;
                tx.commit().await.map_err(StoreError::from)?;
                Ok(t.record)
            }
            Err(refused) => {
                if let Some(ev) = &refused.audit {
                    append(&mut tx, &self.chain, ev, now).await?;
                    tx.commit().await.map_err(StoreError::from)?;
                }
                Err(TransitionError::Refused(refused))
            }
        }
    }

    async fn append_audit(&self, event: AuditEvent, now: i64) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        append(&mut tx, &self.chain, &event, now).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn jobs(&self, filter: &JobFilter) -> Result<Vec<JobRecord>, StoreError> {
        let states: Vec<String> = filter
            .states
            .iter()
            .map(|s| s.as_str().to_owned())
            .collect();
        let (after_at, after_id) = filter
            .after
            .clone()
            .map_or((i64::MIN, String::new()), |(a, b)| (a, b));
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs \
             WHERE (cardinality($1::TEXT[]) = 0 OR state = ANY($1)) \
               AND ($2::TEXT IS NULL OR tenant = $2) \
               AND (created_at, job_id) > ($3, $4) \
               AND (NOT $5 OR (overridden AND override_ack_by IS NULL)) \
             ORDER BY created_at, job_id LIMIT $6"
        );
        let mut conn = self.pool.acquire().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&states)
            .bind(&filter.tenant)
            .bind(after_at)
            .bind(&after_id)
            .bind(filter.unacknowledged_overrides)
            .bind(filter.limit.max(1))
            .fetch_all(&mut *conn)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut job = job_from_row(row)?;
            load_approvals(&mut conn, &mut job).await?;
            out.push(job);
        }
        Ok(out)
    }

    async fn due(&self, now: i64, limit: i64) -> Result<Vec<String>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT job_id FROM jobs WHERE state IN ('pending', 'approved', 'allowed') AND expires_at <= $1 \
             UNION SELECT job_id FROM jobs WHERE state = 'pending' AND NOT escalated AND escalate_at <= $1 \
             LIMIT $2",
        )
        .bind(now)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(ids)
    }

    async fn audit_for_job(&self, job_id: &str) -> Result<Vec<AuditEntry>, StoreError> {
        let sql =
            format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE job_id = $1 ORDER BY at, chain, seq");
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
            "SELECT {AUDIT_COLUMNS} FROM audit WHERE chain = $1 AND seq > $2 ORDER BY seq LIMIT $3"
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

    async fn listen(&self) -> Option<tokio::sync::mpsc::Receiver<StoreEvent>> {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
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
                            let event = match n.payload().split_once(':') {
                                Some(("snapshot", id)) => StoreEvent::Snapshot(id.to_owned()),
                                Some(("job", rest)) => {
                                    let mut parts = rest.splitn(3, ':');
                                    let (Some(kind), Some(version), Some(id)) =
                                        (parts.next(), parts.next(), parts.next())
                                    else {
                                        continue;
                                    };
                                    let Ok(version) = version.parse() else {
                                        continue;
                                    };
                                    StoreEvent::Job {
                                        id: id.to_owned(),
                                        kind: kind.to_owned(),
                                        version,
                                    }
                                }
                                _ => continue,
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
