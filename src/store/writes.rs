//! The writes, each run inside a transaction the backend opens (and, on
//! SQLite, shares between every write waiting): recording decisions, a
//! transition, activating and revoking snapshots. Each holds its answer
//! until the commit says whether it stands.

use super::conn::{Arg, Columns, Conn};
use super::effects::{Dialect, Effects};
use super::reads;
use super::rows::{self, json_text};
use super::{
    Activated, AuditPosition, Recorded, SessionRow, SnapshotRow, StoreError, StoreEvent,
    TransitionError,
};
use crate::approval::{self, Command, JobRecord, Transition};
use crate::audit::AuditEvent;
use crate::policy::Scope;
use std::collections::HashSet;
use tokio::sync::oneshot;

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
        reply: oneshot::Sender<Result<Logged, TransitionError>>,
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
        tenant: String,
        actor: String,
        reason: String,
        now: i64,
        reply: oneshot::Sender<Result<Option<SnapshotRow>, StoreError>>,
    },
    Session {
        op: SessionOp,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    Delivery {
        op: super::deliveries::DeliveryOp,
        reply: DeliveryReply,
    },
}

pub(crate) type DeliveryReply =
    oneshot::Sender<Result<(Vec<super::deliveries::DeliveryRow>, u64), StoreError>>;

/// A change to the approver page's sessions.
pub(crate) enum SessionOp {
    Create(SessionRow),
    /// Sign-out: the session with this id hash ends.
    End(String),
    /// Drops every session expired at this moment.
    Purge(i64),
}

/// A write that ran, holding its answer until the commit says whether it stands.
pub(crate) enum Done {
    Decisions(DecisionReplies, Vec<Recorded>),
    Transition(
        oneshot::Sender<Result<Logged, TransitionError>>,
        Box<Result<Logged, TransitionError>>,
    ),
    Activate(
        oneshot::Sender<Result<Activated, StoreError>>,
        Box<Activated>,
    ),
    Revoke(
        oneshot::Sender<Result<Option<SnapshotRow>, StoreError>>,
        Option<Box<SnapshotRow>>,
    ),
    Session(oneshot::Sender<Result<u64, StoreError>>, u64),
    Delivery(DeliveryReply, (Vec<super::deliveries::DeliveryRow>, u64)),
}

impl Write {
    /// Answers a write that never ran (the transaction could not start).
    pub(crate) fn fail(self, e: &StoreError) {
        match self {
            Write::Decisions(_, replies) => replies.send(Err(e.clone())),
            Write::Transition { reply, .. } => drop(reply.send(Err(e.clone().into()))),
            Write::Activate { reply, .. } => drop(reply.send(Err(e.clone()))),
            Write::Revoke { reply, .. } => drop(reply.send(Err(e.clone()))),
            Write::Session { reply, .. } => drop(reply.send(Err(e.clone()))),
            Write::Delivery { reply, .. } => drop(reply.send(Err(e.clone()))),
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
                tenant,
                actor,
                reason,
                now,
                reply,
            } => {
                let who = (tenant.as_str(), actor.as_str());
                let (out, reply) = settle(revoke(c, d, fx, &id, who, &reason, now).await, reply)?;
                Ok(Done::Revoke(reply, out.map(Box::new)))
            }
            Write::Session { op, reply } => {
                let (out, reply) = settle(session(c, &op).await, reply)?;
                Ok(Done::Session(reply, out))
            }
            Write::Delivery { op, reply } => {
                let (out, reply) = settle(super::deliveries::run(c, &op).await, reply)?;
                Ok(Done::Delivery(reply, out))
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
            Done::Session(tx, n) => drop(tx.send(Ok(n))),
            Done::Delivery(tx, out) => drop(tx.send(Ok(out))),
        }
    }

    /// The transaction rolled back: nothing of this write was kept.
    pub(crate) fn fail(self, e: &StoreError) {
        match self {
            Done::Decisions(replies, _) => replies.send(Err(e.clone())),
            Done::Transition(tx, _) => drop(tx.send(Err(e.clone().into()))),
            Done::Activate(tx, _) => drop(tx.send(Err(e.clone()))),
            Done::Revoke(tx, _) => drop(tx.send(Err(e.clone()))),
            Done::Session(tx, _) => drop(tx.send(Err(e.clone()))),
            Done::Delivery(tx, _) => drop(tx.send(Err(e.clone()))),
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
            fx.apply(c, d, t.effects, t.record.created_at).await?;
            out.push(Recorded::Inserted(t.record));
        } else {
            let existing = reads::load_job(c, d.job, &t.record.job_id)
                .await?
                .ok_or_else(|| StoreError::Corrupt("a conflicting job vanished".into()))?;
            out.push(Recorded::Existing(existing));
        }
    }
    Ok(out)
}

/// A transition's new record and its last audit entry's position.
pub(crate) type Logged = (JobRecord, Option<AuditPosition>);

/// One transition. Refusals are answers, not failures: only a database
/// error fails (and so rolls back) the transaction.
async fn transition<C: Conn>(
    c: &mut C,
    d: &Dialect,
    fx: &mut Effects,
    job_id: &str,
    command: &Command,
    now: i64,
) -> Result<Result<Logged, TransitionError>, StoreError> {
    let current = reads::load_job(c, d.job_for_update, job_id)
        .await?
        .filter(|r| command.sees_tenant(&r.tenant));
    let Some(current) = current else {
        fx.apply(c, d, approval::missing(job_id, command), now)
            .await?;
        return Ok(Err(TransitionError::NotFound));
    };
    match approval::apply(&current, command, now) {
        Ok(t) => {
            let changed = c
                .execute(
                    rows::UPDATE_JOB,
                    &rows::job_update(&t.record, current.version),
                )
                .await?;
            if changed != 1 {
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
            let appended = fx.appended();
            fx.apply(c, d, t.effects, now).await?;
            let last = (fx.appended() > appended)
                .then(|| fx.last_entry())
                .flatten();
            fx.announce(
                d,
                StoreEvent::Job {
                    id: job_id.to_owned(),
                    kind: Some(command.kind()),
                    version: t.record.version,
                },
            );
            Ok(Ok((t.record, last)))
        }
        Err(mut refused) => {
            fx.apply(c, d, std::mem::take(&mut refused.effects), now)
                .await?;
            Ok(Err(TransitionError::Refused(refused)))
        }
    }
}

const ACTIVE_ID: &str = "SELECT snapshot_id FROM active_snapshots WHERE scope = $1";
const INSERT_SNAPSHOT: &str = "INSERT INTO snapshots (id, name, sha256, source, canonical_json, rule_count, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING";
/// Numbers a snapshot at its first activation: one more than the highest
/// version of its policy name (the activation is serialised, so no two
/// snapshots of a name get one number).
const NUMBER_SNAPSHOT: &str = "UPDATE snapshots SET version = (SELECT COALESCE(MAX(version), 0) + 1 FROM snapshots WHERE name = $1), activated_at = $2, activated_by = $3 WHERE id = $4 AND version IS NULL";
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
        c.execute(
            NUMBER_SNAPSHOT,
            &[
                Arg::Text(&s.name),
                Arg::Int(now),
                Arg::Text(actor),
                Arg::Text(s.id.as_str()),
            ],
        )
        .await?;
        c.execute(
            SET_ACTIVE,
            &[
                Arg::Text(scope.as_str()),
                Arg::Text(s.id.as_str()),
                Arg::Int(now),
            ],
        )
        .await?;
        // A tenant's scope is named after it; the system's has no tenant.
        let tenant = if *scope == Scope::system() {
            ""
        } else {
            scope.as_str()
        };
        let event = AuditEvent::policy_reload(
            actor,
            scope.as_str(),
            tenant,
            s.id.as_str(),
            &s.name,
            s.rule_count,
            previous.as_deref(),
        );
        fx.audit(c, d, event, now).await?;
        fx.announce(
            d,
            StoreEvent::Snapshot {
                scope: scope.to_string(),
            },
        );
    }
    Ok(Activated {
        snapshot: stored_snapshot(c, s.id.as_str()).await?,
        changed,
    })
}

async fn stored_snapshot<C: Conn>(c: &mut C, id: &str) -> Result<SnapshotRow, StoreError> {
    let row = c
        .fetch_optional(reads::SNAPSHOT_BY_ID, &[Arg::Text(id)])
        .await?
        .ok_or_else(|| StoreError::Corrupt(format!("snapshot `{id}` vanished")))?;
    rows::snapshot(&row)
}

const REVOKE: &str = "UPDATE snapshots SET revoked_at = $1, revoked_by = $2, revoke_reason = $3 WHERE id = $4 AND revoked_at IS NULL";

/// Revokes a snapshot once; a second revocation keeps the first.
async fn revoke<C: Conn>(
    c: &mut C,
    d: &Dialect,
    fx: &mut Effects,
    id: &str,
    (tenant, actor): (&str, &str),
    reason: &str,
    now: i64,
) -> Result<Option<SnapshotRow>, StoreError> {
    let revoked = c
        .execute(
            REVOKE,
            &[
                Arg::Int(now),
                Arg::Text(actor),
                Arg::Text(reason),
                Arg::Text(id),
            ],
        )
        .await?;
    if revoked == 1 {
        fx.audit(
            c,
            d,
            AuditEvent::snapshot_revoked(actor, id, tenant, reason),
            now,
        )
        .await?;
    }
    reads::snapshot(c, id).await
}

const SESSION_INSERT: &str =
    "INSERT INTO sessions (id_hash, identity, created_at, expires_at) VALUES ($1, $2, $3, $4)";
const SESSION_END: &str = "DELETE FROM sessions WHERE id_hash = $1";
const SESSION_PURGE: &str = "DELETE FROM sessions WHERE expires_at <= $1";

/// Creates, ends or purges sessions; answers how many rows changed.
async fn session<C: Conn>(c: &mut C, op: &SessionOp) -> Result<u64, StoreError> {
    match op {
        SessionOp::Create(s) => {
            c.execute(
                SESSION_INSERT,
                &[
                    Arg::Text(&s.id_hash),
                    Arg::Text(&s.identity),
                    Arg::Int(s.created_at),
                    Arg::Int(s.expires_at),
                ],
            )
            .await
        }
        SessionOp::End(id_hash) => c.execute(SESSION_END, &[Arg::Text(id_hash)]).await,
        SessionOp::Purge(now) => c.execute(SESSION_PURGE, &[Arg::Int(*now)]).await,
    }
}
