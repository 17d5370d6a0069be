//! The store's operations, written once. Writes run inside a transaction
//! the backend opens (and, on SQLite, shares between every write waiting),
//! collecting their effects in [`Effects`], which is flushed just before
//! the commit; reads run on any connection. The few statements that differ
//! between databases come from the backend's [`Dialect`].

use super::conn::{Arg, Columns, Conn};
use super::rows::{self, OutboxInsert, json_text};
use super::{
    Activated, JobFilter, OutboxRow, Recorded, SnapshotRow, StoreError, StoreEvent, TransitionError,
};
use crate::approval::{self, Command, Effect, JobRecord, JobState, Transition};
use crate::audit::{AuditEntry, AuditEvent, ChainHead};
use crate::canonical::to_jcs;
use crate::policy::Scope;
use std::collections::HashSet;
use std::sync::LazyLock;
use tokio::sync::oneshot;

/// The statements that differ between databases. Everything else the core
/// runs is the same text on both.
#[derive(Debug)]
pub(crate) struct Dialect {
    /// One job by id (`$1`), with its approvals as the JSON array column
    /// `approvals_json`.
    pub job: &'static str,
    /// The same, also locking the row for the rest of the transaction
    /// where other writers could interleave.
    pub job_for_update: &'static str,
    /// Jobs by filter: `$1` states as a JSON array (`[]`: any), `$2`
    /// tenant or NULL, `$3`/`$4` after (created_at, job_id), `$5` only
    /// unacknowledged overrides, `$6` limit; ordered by (created_at, job_id).
    pub jobs: &'static str,
    /// A chain's head (`$1`), locked where other writers could interleave.
    pub audit_head: &'static str,
    /// Serialises snapshot activation across processes, where needed.
    pub lock_activation: Option<&'static str>,
    /// Announces a change to other processes (`$1` the payload), where any listen.
    pub notify: Option<&'static str>,
}

// ------------------------------------------------------------ effects

/// What a transaction writes besides the records: audit entries chained
/// on this process's head, outbox messages, and announcements. Flushed
/// once, just before the commit.
pub(crate) struct Effects {
    chain: String,
    head: Option<ChainHead>,
    audit: Vec<AuditEntry>,
    outbox: Vec<OutboxInsert>,
    announce: Vec<String>,
}

const ENSURE_HEAD: &str = "INSERT INTO audit_heads (chain, seq, head_hash) VALUES ($1, 0, $2) ON CONFLICT (chain) DO NOTHING";
const SAVE_HEAD: &str = "INSERT INTO audit_heads (chain, seq, head_hash) VALUES ($1, $2, $3) ON CONFLICT (chain) DO UPDATE SET seq = excluded.seq, head_hash = excluded.head_hash";

impl Effects {
    pub(crate) fn new(chain: &str) -> Effects {
        Effects {
            chain: chain.to_owned(),
            head: None,
            audit: Vec::new(),
            outbox: Vec::new(),
            announce: Vec::new(),
        }
    }

    async fn audit<C: Conn>(
        &mut self,
        c: &mut C,
        d: &Dialect,
        event: &AuditEvent,
        at: i64,
    ) -> Result<(), StoreError> {
        let head = match self.head.take() {
            Some(h) => h,
            None => {
                // The head row exists before it is locked, so two first
                // appends to one chain cannot both start from genesis.
                c.execute(
                    ENSURE_HEAD,
                    &[Arg::Text(&self.chain), Arg::Text(crate::audit::GENESIS)],
                )
                .await?;
                let row = c
                    .fetch_optional(d.audit_head, &[Arg::Text(&self.chain)])
                    .await?
                    .ok_or_else(|| StoreError::Corrupt("the audit head vanished".into()))?;
                ChainHead {
                    chain: self.chain.clone(),
                    seq: row.int("seq")?,
                    hash: row.text("head_hash")?,
                }
            }
        };
        let head = self.head.insert(head);
        self.audit.push(head.append(event, at));
        Ok(())
    }

    async fn apply<C: Conn>(
        &mut self,
        c: &mut C,
        d: &Dialect,
        effects: &[Effect],
        at: i64,
    ) -> Result<(), StoreError> {
        for effect in effects {
            match effect {
                Effect::Audit(event) => self.audit(c, d, event, at).await?,
                Effect::Notify(n) => self.outbox.push(OutboxInsert {
                    key: n.key(),
                    body: json_text(&n.body)?,
                    notification: n.clone(),
                    at,
                }),
            }
        }
        Ok(())
    }

    fn announce(&mut self, event: StoreEvent) {
        self.announce.push(event.payload());
    }

    /// Writes everything collected, in as few statements as the database allows.
    pub(crate) async fn flush<C: Conn>(self, c: &mut C, d: &Dialect) -> Result<(), StoreError> {
        if let Some(head) = &self.head {
            let bodies: Vec<String> = self.audit.iter().map(|e| to_jcs(&e.body)).collect();
            let values: Vec<Vec<Arg>> = self
                .audit
                .iter()
                .zip(&bodies)
                .map(|(e, b)| rows::audit_insert(e, b))
                .collect();
            for chunk in values.chunks(1000) {
                c.insert_rows(rows::INSERT_AUDIT, chunk, "").await?;
            }
            c.execute(
                SAVE_HEAD,
                &[
                    Arg::Text(&head.chain),
                    Arg::Int(head.seq),
                    Arg::Text(&head.hash),
                ],
            )
            .await?;
        }
        if !self.outbox.is_empty() {
            let values: Vec<Vec<Arg>> = self.outbox.iter().map(rows::outbox_insert).collect();
            for chunk in values.chunks(1000) {
                c.insert_rows(rows::INSERT_OUTBOX, chunk, "").await?;
            }
        }
        if let Some(notify) = d.notify {
            for payload in &self.announce {
                c.execute(notify, &[Arg::Text(payload)]).await?;
            }
        }
        Ok(())
    }
}

// ------------------------------------------------------------ writes

/// Where the answers for recorded decisions go: each caller gets the part
/// of the results for the decisions it sent, in order.
pub(crate) struct DecisionReplies(Vec<(usize, DecisionReply)>);

type DecisionReply = oneshot::Sender<Result<Vec<Recorded>, StoreError>>;

impl DecisionReplies {
    pub(crate) fn one(count: usize, reply: DecisionReply) -> DecisionReplies {
        DecisionReplies(vec![(count, reply)])
    }

    /// Takes `other`'s callers after this one's.
    pub(crate) fn append(&mut self, other: DecisionReplies) {
        self.0.extend(other.0);
    }

    fn send(self, result: Result<Vec<Recorded>, StoreError>) {
        match result {
            Ok(recorded) => {
                let mut rest = recorded.into_iter();
                for (n, reply) in self.0 {
                    let _ = reply.send(Ok(rest.by_ref().take(n).collect()));
                }
            }
            Err(e) => {
                for (_, reply) in self.0 {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// A write for a backend to run in a transaction, with where its answer goes.
pub(crate) enum Write {
    Decisions(Vec<Transition>, DecisionReplies),
    Transition {
        job_id: String,
        command: Box<Command>,
        now: i64,
        reply: oneshot::Sender<Result<JobRecord, TransitionError>>,
    },
    Activate {
        scope: Scope,
        snapshot: Box<SnapshotRow>,
        actor: String,
        now: i64,
        reply: oneshot::Sender<Result<Activated, StoreError>>,
    },
    Revoke {
        id: String,
        actor: String,
        reason: String,
        now: i64,
        reply: oneshot::Sender<Result<Option<SnapshotRow>, StoreError>>,
    },
}

/// A write that ran, holding its answer until the commit says whether it stands.
pub(crate) enum Done {
    Decisions(DecisionReplies, Vec<Recorded>),
    Transition(
        oneshot::Sender<Result<JobRecord, TransitionError>>,
        Box<Result<JobRecord, TransitionError>>,
    ),
    Activate(
        oneshot::Sender<Result<Activated, StoreError>>,
        Box<Activated>,
    ),
    Revoke(
        oneshot::Sender<Result<Option<SnapshotRow>, StoreError>>,
        Option<Box<SnapshotRow>>,
    ),
}

impl Write {
    /// Answers a write that never ran (the transaction could not start).
    pub(crate) fn fail(self, e: &StoreError) {
        match self {
            Write::Decisions(_, replies) => replies.send(Err(e.clone())),
            Write::Transition { reply, .. } => drop(reply.send(Err(e.clone().into()))),
            Write::Activate { reply, .. } => drop(reply.send(Err(e.clone()))),
            Write::Revoke { reply, .. } => drop(reply.send(Err(e.clone()))),
        }
    }

    /// Runs the write inside the caller's transaction. On a database
    /// error the write is answered with it at once and the error returned,
    /// so the caller rolls back and fails the rest.
    pub(crate) async fn run<C: Conn>(
        self,
        c: &mut C,
        d: &Dialect,
        fx: &mut Effects,
    ) -> Result<Done, StoreError> {
        fn settle<T, U>(
            result: Result<T, StoreError>,
            reply: oneshot::Sender<Result<U, StoreError>>,
        ) -> Result<(T, oneshot::Sender<Result<U, StoreError>>), StoreError> {
            match result {
                Ok(v) => Ok((v, reply)),
                Err(e) => {
                    let _ = reply.send(Err(e.clone()));
                    Err(e)
                }
            }
        }
        match self {
            Write::Decisions(decisions, replies) => {
                match record_decisions(c, d, fx, decisions).await {
                    Ok(out) => Ok(Done::Decisions(replies, out)),
                    Err(e) => {
                        replies.send(Err(e.clone()));
                        Err(e)
                    }
                }
            }
            Write::Transition {
                job_id,
                command,
                now,
                reply,
            } => match transition(c, d, fx, &job_id, &command, now).await {
                Ok(out) => Ok(Done::Transition(reply, Box::new(out))),
                Err(e) => {
                    let _ = reply.send(Err(e.clone().into()));
                    Err(e)
                }
            },
            Write::Activate {
                scope,
                snapshot,
                actor,
                now,
                reply,
            } => {
                let (out, reply) = settle(
                    activate(c, d, fx, &scope, &snapshot, &actor, now).await,
                    reply,
                )?;
                Ok(Done::Activate(reply, Box::new(out)))
            }
            Write::Revoke {
                id,
                actor,
                reason,
                now,
                reply,
            } => {
                let (out, reply) =
                    settle(revoke(c, d, fx, &id, &actor, &reason, now).await, reply)?;
                Ok(Done::Revoke(reply, out.map(Box::new)))
            }
        }
    }
}

impl Done {
    /// The transaction committed: the answer stands.
    pub(crate) fn succeed(self) {
        match self {
            Done::Decisions(replies, r) => replies.send(Ok(r)),
            Done::Transition(tx, r) => drop(tx.send(*r)),
            Done::Activate(tx, r) => drop(tx.send(Ok(*r))),
            Done::Revoke(tx, r) => drop(tx.send(Ok(r.map(|b| *b)))),
        }
    }

    /// The transaction rolled back: nothing of this write was kept.
    pub(crate) fn fail(self, e: &StoreError) {
        match self {
            Done::Decisions(replies, _) => replies.send(Err(e.clone())),
            Done::Transition(tx, _) => drop(tx.send(Err(e.clone().into()))),
            Done::Activate(tx, _) => drop(tx.send(Err(e.clone()))),
            Done::Revoke(tx, _) => drop(tx.send(Err(e.clone()))),
        }
    }
}

/// Inserts decided jobs with one statement per chunk; a job id already
/// stored (or repeated among `decisions`) is returned as it is stored.
async fn record_decisions<C: Conn>(
    c: &mut C,
    d: &Dialect,
    fx: &mut Effects,
    decisions: Vec<Transition>,
) -> Result<Vec<Recorded>, StoreError> {
    let evaluations: Vec<String> = decisions
        .iter()
        .map(|t| json_text(&t.record.evaluation))
        .collect::<Result<_, _>>()?;
    let values: Vec<Vec<Arg>> = decisions
        .iter()
        .zip(&evaluations)
        .map(|(t, e)| rows::job_insert(&t.record, e))
        .collect();
    let mut inserted = HashSet::new();
    for chunk in values.chunks(500) {
        for row in c
            .insert_rows(
                rows::INSERT_JOBS,
                chunk,
                " ON CONFLICT (job_id) DO NOTHING RETURNING job_id",
            )
            .await?
        {
            inserted.insert(row.text("job_id")?);
        }
    }
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(decisions.len());
    for t in decisions {
        let first = seen.insert(t.record.job_id.clone());
        if first && inserted.contains(&t.record.job_id) {
            fx.apply(c, d, &t.effects, t.record.created_at).await?;
            out.push(Recorded::Inserted(t.record));
        } else {
            let existing = load_job(c, d.job, &t.record.job_id)
                .await?
                .ok_or_else(|| StoreError::Corrupt("a conflicting job vanished".into()))?;
            out.push(Recorded::Existing(existing));
        }
    }
    Ok(out)
}

async fn load_job<C: Conn>(
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

/// One transition. Refusals are answers, not failures: only a database
/// error fails (and so rolls back) the transaction.
async fn transition<C: Conn>(
    c: &mut C,
    d: &Dialect,
    fx: &mut Effects,
    job_id: &str,
    command: &Command,
    now: i64,
) -> Result<Result<JobRecord, TransitionError>, StoreError> {
    let Some(current) = load_job(c, d.job_for_update, job_id).await? else {
        fx.apply(c, d, &approval::missing(job_id, command), now)
            .await?;
        return Ok(Err(TransitionError::NotFound));
    };
    match approval::apply(&current, command, now) {
        Ok(t) => {
            let changed = c
                .fetch_all(
                    rows::UPDATE_JOB,
                    &rows::job_update(&t.record, current.version),
                )
                .await?;
            if changed.len() != 1 {
                return Err(StoreError::Conflict);
            }
            // Approvals are only ever added: the ones past those read are new.
            let added = t.record.approvals.get(current.approvals.len()..);
            if let Some(added) = added.filter(|a| !a.is_empty()) {
                let roles: Vec<String> = added
                    .iter()
                    .map(|a| json_text(&a.roles))
                    .collect::<Result<_, _>>()?;
                let values: Vec<Vec<Arg>> = added
                    .iter()
                    .zip(&roles)
                    .map(|(a, r)| rows::approval_insert(job_id, a, r))
                    .collect();
                c.insert_rows(rows::INSERT_APPROVALS, &values, "").await?;
            }
            fx.apply(c, d, &t.effects, now).await?;
            fx.announce(StoreEvent::Job {
                id: job_id.to_owned(),
                kind: Some(command.kind()),
                version: t.record.version,
            });
            Ok(Ok(t.record))
        }
        Err(refused) => {
            fx.apply(c, d, &refused.effects, now).await?;
            Ok(Err(TransitionError::Refused(refused)))
        }
    }
}

const ACTIVE_ID: &str = "SELECT snapshot_id FROM active_snapshots WHERE scope = $1";
const INSERT_SNAPSHOT: &str = "INSERT INTO snapshots (id, name, sha256, source, canonical_json, rule_count, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING";
const SNAPSHOT_BY_ID: &str = concat!(
    "SELECT ",
    rows::snapshot_columns!(),
    " FROM snapshots WHERE id = $1"
);
const LAST_VERSION: &str = "SELECT COALESCE(MAX(version), 0) AS v FROM snapshots WHERE name = $1";
const NUMBER_SNAPSHOT: &str = "UPDATE snapshots SET version = $1, activated_at = $2, activated_by = $3 WHERE id = $4 AND version IS NULL";
const SET_ACTIVE: &str = "INSERT INTO active_snapshots (scope, snapshot_id, changed_at) VALUES ($1, $2, $3) ON CONFLICT (scope) DO UPDATE SET snapshot_id = excluded.snapshot_id, changed_at = excluded.changed_at";

/// Stores the snapshot if new and makes it the scope's active one. A
/// snapshot is numbered at its first activation: one more than the
/// highest version of its policy name.
async fn activate<C: Conn>(
    c: &mut C,
    d: &Dialect,
    fx: &mut Effects,
    scope: &Scope,
    s: &SnapshotRow,
    actor: &str,
    now: i64,
) -> Result<Activated, StoreError> {
    if let Some(lock) = d.lock_activation {
        c.execute(lock, &[]).await?;
    }
    let previous = match c
        .fetch_optional(ACTIVE_ID, &[Arg::Text(scope.as_str())])
        .await?
    {
        Some(row) => Some(row.text("snapshot_id")?),
        None => None,
    };
    c.execute(
        INSERT_SNAPSHOT,
        &[
            Arg::Text(s.id.as_str()),
            Arg::Text(&s.name),
            Arg::Text(&s.sha256),
            Arg::Text(&s.source),
            Arg::Text(&s.canonical_json),
            Arg::Int(s.rule_count),
            Arg::Int(now),
        ],
    )
    .await?;
    let changed = previous.as_deref() != Some(s.id.as_str());
    if changed {
        let stored = stored_snapshot(c, s.id.as_str()).await?;
        if stored.version.is_none() {
            let last = c
                .fetch_optional(LAST_VERSION, &[Arg::Text(&s.name)])
                .await?
                .map(|r| r.int("v"))
                .transpose()?
                .unwrap_or(0);
            c.execute(
                NUMBER_SNAPSHOT,
                &[
                    Arg::Int(last + 1),
                    Arg::Int(now),
                    Arg::Text(actor),
                    Arg::Text(s.id.as_str()),
                ],
            )
            .await?;
        }
        c.execute(
            SET_ACTIVE,
            &[
                Arg::Text(scope.as_str()),
                Arg::Text(s.id.as_str()),
                Arg::Int(now),
            ],
        )
        .await?;
        let event = AuditEvent::policy_reload(
            actor,
            scope.as_str(),
            s.id.as_str(),
            &s.name,
            s.rule_count,
            previous.as_deref(),
        );
        fx.audit(c, d, &event, now).await?;
        fx.announce(StoreEvent::Snapshot {
            scope: scope.to_string(),
        });
    }
    Ok(Activated {
        snapshot: stored_snapshot(c, s.id.as_str()).await?,
        changed,
    })
}

async fn stored_snapshot<C: Conn>(c: &mut C, id: &str) -> Result<SnapshotRow, StoreError> {
    let row = c
        .fetch_optional(SNAPSHOT_BY_ID, &[Arg::Text(id)])
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("snapshot `{id}` vanished")))?;
    rows::snapshot(&row)
}

const REVOKE: &str = "UPDATE snapshots SET revoked_at = $1, revoked_by = $2, revoke_reason = $3 WHERE id = $4 AND revoked_at IS NULL RETURNING id";

/// Revokes a snapshot once; a second revocation keeps the first.
async fn revoke<C: Conn>(
    c: &mut C,
    d: &Dialect,
    fx: &mut Effects,
    id: &str,
    actor: &str,
    reason: &str,
    now: i64,
) -> Result<Option<SnapshotRow>, StoreError> {
    let revoked = c
        .fetch_all(
            REVOKE,
            &[
                Arg::Int(now),
                Arg::Text(actor),
                Arg::Text(reason),
                Arg::Text(id),
            ],
        )
        .await?;
    if !revoked.is_empty() {
        fx.audit(c, d, &AuditEvent::snapshot_revoked(actor, id, reason), now)
            .await?;
    }
    snapshot(c, id).await
}

// ------------------------------------------------------------ reads

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

const ACTIVE_SNAPSHOTS: &str = concat!(
    "SELECT a.scope AS scope, ",
    "s.id AS id, s.name AS name, s.sha256 AS sha256, s.version AS version, s.source AS source, s.canonical_json AS canonical_json, s.rule_count AS rule_count, s.created_at AS created_at, s.activated_at AS activated_at, s.activated_by AS activated_by, s.revoked_at AS revoked_at, s.revoked_by AS revoked_by, s.revoke_reason AS revoke_reason",
    " FROM active_snapshots a JOIN snapshots s ON s.id = a.snapshot_id ORDER BY a.scope"
);

pub(crate) async fn active_snapshots<C: Conn>(
    c: &mut C,
) -> Result<Vec<(Scope, SnapshotRow)>, StoreError> {
    c.fetch_all(ACTIVE_SNAPSHOTS, &[])
        .await?
        .iter()
        .map(|r| {
            let scope = r.text("scope")?;
            let scope = Scope::parse(&scope).map_err(StoreError::Corrupt)?;
            Ok((scope, rows::snapshot(r)?))
        })
        .collect()
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
