//! The reads, written once for both databases; each runs on any
//! connection of the pool (or inside a write's transaction).

use super::conn::{Arg, Columns, Conn};
use super::effects::Dialect;
use super::rows::{self, json_text};
use super::{JobFilter, OutboxRow, SessionRow, SnapshotRow, StoreError};
use crate::approval::{JobRecord, JobState};
use crate::audit::AuditEntry;
use crate::policy::{Scope, SnapshotId};
use std::sync::LazyLock;

pub(crate) const SNAPSHOT_BY_ID: &str = concat!(
    "SELECT ",
    rows::snapshot_columns!(),
    " FROM snapshots WHERE id = $1"
);

pub(crate) async fn load_job<C: Conn>(
    c: &mut C,
    sql: &'static str,
    job_id: &str,
) -> Result<Option<JobRecord>, StoreError> {
    c.fetch_optional(sql, &[Arg::Text(job_id)])
        .await?
        .as_ref()
        .map(rows::job)
        .transpose()
}

pub(crate) async fn job<C: Conn>(
    c: &mut C,
    d: &Dialect,
    job_id: &str,
) -> Result<Option<JobRecord>, StoreError> {
    load_job(c, d.job, job_id).await
}

pub(crate) async fn jobs<C: Conn>(
    c: &mut C,
    d: &Dialect,
    f: &JobFilter,
) -> Result<Vec<JobRecord>, StoreError> {
    let states: Vec<&str> = f.states.iter().map(|s| s.as_str()).collect();
    let states = json_text(&states)?;
    let (after_at, after_id) = f
        .after
        .as_ref()
        .map_or((i64::MIN, ""), |(a, b)| (*a, b.as_str()));
    c.fetch_all(
        d.jobs,
        &[
            Arg::Text(&states),
            Arg::OptText(f.tenant.as_deref()),
            Arg::Int(after_at),
            Arg::Text(after_id),
            Arg::Bool(f.unacknowledged_overrides),
            Arg::Int(f.limit.max(1)),
        ],
    )
    .await?
    .iter()
    .map(rows::job)
    .collect()
}

/// The sweep query, built from the states that have a deadline.
// INVARIANT: `expires_at <= $1` and `escalate_at <= $1` are
// `approval::reached(deadline, now)`; a store test checks both agree at the
// boundary.
static DUE: LazyLock<String> = LazyLock::new(|| {
    let states: Vec<String> = JobState::EXPIRING
        .iter()
        .map(|s| format!("'{}'", s.as_str()))
        .collect();
    format!(
        "SELECT job_id FROM jobs WHERE state IN ({}) AND expires_at <= $1 \
         UNION SELECT job_id FROM jobs WHERE state = '{}' AND escalated = FALSE AND escalate_at <= $1 \
         LIMIT $2",
        states.join(", "),
        JobState::Pending.as_str()
    )
});

pub(crate) async fn due<C: Conn>(
    c: &mut C,
    now: i64,
    limit: i64,
) -> Result<Vec<String>, StoreError> {
    let sql: &'static str = DUE.as_str();
    c.fetch_all(sql, &[Arg::Int(now), Arg::Int(limit)])
        .await?
        .iter()
        .map(|r| r.text("job_id"))
        .collect()
}

/// Only the ids: replicas poll this every half second, and a snapshot's
/// source is only read when it changed.
const ACTIVE_SNAPSHOTS: &str = "SELECT scope, snapshot_id FROM active_snapshots ORDER BY scope";

pub(crate) async fn active_snapshots<C: Conn>(
    c: &mut C,
) -> Result<Vec<(Scope, SnapshotId)>, StoreError> {
    c.fetch_all(ACTIVE_SNAPSHOTS, &[])
        .await?
        .iter()
        .map(|r| {
            let scope = r.text("scope")?;
            let scope = Scope::parse(&scope).map_err(StoreError::Corrupt)?;
            Ok((scope, rows::snapshot_id(&r.text("snapshot_id")?)?))
        })
        .collect()
}

/// Whether the snapshot `id` is revoked; an unknown one is not.
pub(crate) async fn snapshot_revoked<C: Conn>(c: &mut C, id: &str) -> Result<bool, StoreError> {
    const REVOKED: &str = "SELECT revoked_at FROM snapshots WHERE id = $1";
    match c.fetch_optional(REVOKED, &[Arg::Text(id)]).await? {
        Some(row) => Ok(row.opt_int("revoked_at")?.is_some()),
        None => Ok(false),
    }
}

pub(crate) async fn snapshot<C: Conn>(
    c: &mut C,
    id: &str,
) -> Result<Option<SnapshotRow>, StoreError> {
    c.fetch_optional(SNAPSHOT_BY_ID, &[Arg::Text(id)])
        .await?
        .as_ref()
        .map(rows::snapshot)
        .transpose()
}

const SNAPSHOTS: &str = concat!(
    "SELECT ",
    rows::snapshot_columns!(),
    " FROM snapshots WHERE (CAST($1 AS TEXT) IS NULL OR name = $1) ORDER BY name, version IS NULL, version, created_at"
);

pub(crate) async fn snapshots<C: Conn>(
    c: &mut C,
    name: Option<&str>,
) -> Result<Vec<SnapshotRow>, StoreError> {
    c.fetch_all(SNAPSHOTS, &[Arg::OptText(name)])
        .await?
        .iter()
        .map(rows::snapshot)
        .collect()
}

const AUDIT_FOR_JOB: &str = concat!(
    "SELECT ",
    rows::audit_columns!(),
    " FROM audit WHERE job_id = $1 ORDER BY at, chain, seq"
);
const AUDIT_PAGE: &str = concat!(
    "SELECT ",
    rows::audit_columns!(),
    " FROM audit WHERE chain = $1 AND seq > $2 ORDER BY seq LIMIT $3"
);
const AUDIT_LAST: &str = concat!(
    "SELECT ",
    rows::audit_columns!(),
    " FROM audit WHERE chain = $1 ORDER BY seq DESC LIMIT 1"
);
const CHAINS: &str = "SELECT DISTINCT chain FROM audit ORDER BY chain";
const OUTBOX: &str = concat!(
    "SELECT ",
    rows::outbox_columns!(),
    " FROM outbox ORDER BY created_at, id LIMIT $1"
);

pub(crate) async fn audit_for_job<C: Conn>(
    c: &mut C,
    job_id: &str,
) -> Result<Vec<AuditEntry>, StoreError> {
    c.fetch_all(AUDIT_FOR_JOB, &[Arg::Text(job_id)])
        .await?
        .iter()
        .map(rows::audit)
        .collect()
}

pub(crate) async fn audit_page<C: Conn>(
    c: &mut C,
    chain: &str,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<AuditEntry>, StoreError> {
    c.fetch_all(
        AUDIT_PAGE,
        &[Arg::Text(chain), Arg::Int(after_seq), Arg::Int(limit)],
    )
    .await?
    .iter()
    .map(rows::audit)
    .collect()
}

pub(crate) async fn audit_last<C: Conn>(
    c: &mut C,
    chain: &str,
) -> Result<Option<AuditEntry>, StoreError> {
    c.fetch_optional(AUDIT_LAST, &[Arg::Text(chain)])
        .await?
        .as_ref()
        .map(rows::audit)
        .transpose()
}

pub(crate) async fn chains<C: Conn>(c: &mut C) -> Result<Vec<String>, StoreError> {
    c.fetch_all(CHAINS, &[])
        .await?
        .iter()
        .map(|r| r.text("chain"))
        .collect()
}

pub(crate) async fn outbox<C: Conn>(c: &mut C, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
    c.fetch_all(OUTBOX, &[Arg::Int(limit)])
        .await?
        .iter()
        .map(rows::outbox)
        .collect()
}

const SESSION: &str = "SELECT id_hash, identity, created_at, expires_at FROM sessions WHERE id_hash = $1 AND expires_at > $2";

pub(crate) async fn session<C: Conn>(
    c: &mut C,
    id_hash: &str,
    now: i64,
) -> Result<Option<SessionRow>, StoreError> {
    let Some(row) = c
        .fetch_optional(SESSION, &[Arg::Text(id_hash), Arg::Int(now)])
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(SessionRow {
        id_hash: row.text("id_hash")?,
        identity: row.text("identity")?,
        created_at: row.int("created_at")?,
        expires_at: row.int("expires_at")?,
    }))
}
