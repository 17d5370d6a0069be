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
use std::collections::{HashMap, HashSet};
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

/// What a write produced inside its transaction, held (with the write and
/// its reply) until the commit says whether it stands.
pub(crate) enum Outcome {
    /// Per decision, in order: `None` when it was inserted, the stored
    /// record when its job id was taken already.
    Decisions(Vec<Option<JobRecord>>),
    Transition(Box<Result<Logged, TransitionError>>),
    Activate(Box<Activated>),
    Revoke(Option<Box<SnapshotRow>>),
    Session(u64),
    Delivery((Vec<super::deliveries::DeliveryRow>, u64)),
}

impl Write {
    /// Answers a write that is not kept: its transaction could not start,
    /// or rolled back.
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

    /// Whether nobody waits for the answer any more (every caller timed out).
    pub(crate) fn abandoned(&self) -> bool {
        match self {
            Write::Decisions(_, replies) => replies.0.iter().all(|(_, r)| r.is_closed()),
            Write::Transition { reply, .. } => reply.is_closed(),
            Write::Activate { reply, .. } => reply.is_closed(),
            Write::Revoke { reply, .. } => reply.is_closed(),
            Write::Session { reply, .. } => reply.is_closed(),
            Write::Delivery { reply, .. } => reply.is_closed(),
        }
    }

    /// Whether the write may share a transaction with others where several
    /// processes write (PostgreSQL): it locks nothing but job rows, which
    /// [`run_together`] locks first in one order, and this process's chain
    /// head. Activations (an advisory lock), revocations, sessions and
    /// deliveries run in transactions of their own there.
    pub(crate) fn shares(&self) -> bool {
        matches!(self, Write::Decisions(..) | Write::Transition { .. })
    }

    /// Runs the write inside the caller's transaction and returns what it
    /// produced, answering nobody: the write stays whole, so that after a
    /// rollback it can be answered with the error or run again.
    pub(crate) async fn run<C: Conn>(
        &self,
        c: &mut C,
        d: &Dialect,
        fx: &mut Effects,
        held: &mut Held,
    ) -> Result<Outcome, StoreError> {
        Ok(match self {
            Write::Decisions(decisions, _) => {
                Outcome::Decisions(record_decisions(c, d, fx, decisions).await?)
            }
            Write::Transition {
                job_id,
                command,
                now,
                ..
            } => Outcome::Transition(Box::new(
                transition(c, d, fx, held, job_id, command, *now).await?,
            )),
            Write::Activate {
                scope,
                snapshot,
                actor,
                now,
                ..
            } => Outcome::Activate(Box::new(
                activate(c, d, fx, scope, snapshot, actor, *now).await?,
            )),
            Write::Revoke {
                id,
                tenant,
                actor,
                reason,
                now,
                ..
            } => {
                let who = (tenant.as_str(), actor.as_str());
                Outcome::Revoke(revoke(c, d, fx, id, who, reason, *now).await?.map(Box::new))
            }
            Write::Session { op, .. } => Outcome::Session(session(c, op).await?),
            Write::Delivery { op, .. } => Outcome::Delivery(super::deliveries::run(c, op).await?),
        })
    }

    /// The transaction committed: the write's outcome stands.
    pub(crate) fn answer(self, outcome: Outcome) {
        match (self, outcome) {
            (Write::Decisions(decisions, replies), Outcome::Decisions(stored)) => {
                let recorded = decisions
                    .into_iter()
                    .zip(stored)
                    .map(|(t, existing)| match existing {
                        None => Recorded::Inserted(t.record),
                        Some(r) => Recorded::Existing(r),
                    })
                    .collect();
                replies.send(Ok(recorded))
            }
            (Write::Transition { reply, .. }, Outcome::Transition(r)) => drop(reply.send(*r)),
            (Write::Activate { reply, .. }, Outcome::Activate(a)) => drop(reply.send(Ok(*a))),
            (Write::Revoke { reply, .. }, Outcome::Revoke(r)) => {
                drop(reply.send(Ok(r.map(|b| *b))))
            }
            (Write::Session { reply, .. }, Outcome::Session(n)) => drop(reply.send(Ok(n))),
            (Write::Delivery { reply, .. }, Outcome::Delivery(out)) => drop(reply.send(Ok(out))),
            // `run` gives each write its own kind of outcome.
            (w, _) => w.fail(&StoreError::Corrupt(
                "a write's outcome was of another kind".into(),
            )),
        }
    }
}

/// The job records this transaction locked first, as read then. A
/// transition takes its job's record from here instead of reading it; a
/// second transition of the same job in the batch reads it again (its row
/// is locked already, and the read sees the first one's change).
#[derive(Default)]
pub(crate) struct Held(HashMap<String, JobRecord>);

/// A batch that did not commit; nothing of it was kept, and no write in
/// it has been answered.
pub(crate) struct Failed {
    pub error: StoreError,
    pub writes: Vec<Write>,
    /// Whether the transaction had begun: the database answered.
    pub began: bool,
}

/// Runs `writes` in one transaction opened with `begin`, and answers each
/// once it has committed. Where the dialect locks jobs, the job rows the
/// transitions read are locked first, in job id order, so that batches of
/// several processes cannot deadlock on them. Each write sees the effects
/// of the ones before it. On a database error the transaction is rolled
/// back (the caller closes a connection whose rollback failed too) and the
/// writes come back unanswered.
pub(crate) async fn run_together<C: Conn>(
    c: &mut C,
    d: &Dialect,
    chain: &str,
    begin: &'static str,
    writes: Vec<Write>,
) -> Result<(), Failed> {
    if let Err(error) = c.execute(begin, &[]).await {
        return Err(Failed {
            error,
            writes,
            began: false,
        });
    }
    let mut outcomes = Vec::with_capacity(writes.len());
    let result = async {
        let mut held = Held::default();
        if let Some(lock) = d.lock_jobs {
            let mut ids: Vec<&str> = writes
                .iter()
                .filter_map(|w| match w {
                    Write::Transition { job_id, .. } => Some(job_id.as_str()),
                    _ => None,
                })
                .collect();
            if !ids.is_empty() {
                ids.sort_unstable();
                ids.dedup();
                let ids = json_text(&ids)?;
                for row in c.fetch_all(lock, &[Arg::Text(&ids)]).await? {
                    let record = rows::job(&row)?;
                    held.0.insert(record.job_id.clone(), record);
                }
            }
        }
        let mut fx = Effects::new(chain);
        for w in &writes {
            outcomes.push(w.run(c, d, &mut fx, &mut held).await?);
        }
        fx.flush(c, d).await?;
        c.execute("COMMIT", &[]).await.map(drop)
    }
    .await;
    match result {
        Ok(()) => {
            writes
                .into_iter()
                .zip(outcomes)
                .for_each(|(w, o)| w.answer(o));
            Ok(())
        }
        Err(error) => {
            // Whatever the rollback says, the caller closes the connection
            // if it may still be inside the transaction.
            let _ = c.execute("ROLLBACK", &[]).await;
            Err(Failed {
                error,
                writes,
                began: true,
            })
        }
    }
}

/// Joins the batch's decision writes into one, first: each caller is
/// still answered with its own part.
pub(crate) fn merge_decisions(writes: Vec<Write>) -> Vec<Write> {
    let mut merged: Option<(Vec<_>, DecisionReplies)> = None;
    let mut others = Vec::with_capacity(writes.len());
    for w in writes {
        match (w, &mut merged) {
            (Write::Decisions(d, r), None) => merged = Some((d, r)),
            (Write::Decisions(d, r), Some((all, replies))) => {
                all.extend(d);
                replies.append(r);
            }
            (w, _) => others.push(w),
        }
    }
    match merged {
        Some((d, r)) => std::iter::once(Write::Decisions(d, r))
            .chain(others)
            .collect(),
        None => others,
    }
}

/// Inserts decided jobs with one statement per chunk; a job id already
/// stored (or repeated among `decisions`) is returned as it is stored.
async fn record_decisions<C: Conn>(
    c: &mut C,
    d: &Dialect,
    fx: &mut Effects,
    decisions: &[Transition],
) -> Result<Vec<Option<JobRecord>>, StoreError> {
    let evaluations: Vec<String> = decisions
        .iter()
        .map(|t| json_text(&t.record.evaluation))
        .collect::<Result<_, _>>()?;
    let mut values: Vec<(&str, Vec<Arg>)> = decisions
        .iter()
        .zip(&evaluations)
        .map(|(t, e)| (t.record.job_id.as_str(), rows::job_insert(&t.record, e)))
        .collect();
    // Inserted in job id order: two processes inserting the same ids at
    // once wait for each other in one order, never in a cycle.
    values.sort_by(|a, b| a.0.cmp(b.0));
    let values: Vec<Vec<Arg>> = values.into_iter().map(|(_, v)| v).collect();
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
        let first = seen.insert(t.record.job_id.as_str());
        if first && inserted.contains(&t.record.job_id) {
            // Cloned: the write stays whole should its batch roll back
            // and run again.
            fx.apply(c, d, t.effects.clone(), t.record.created_at)
                .await?;
            out.push(None);
        } else {
            let existing = reads::load_job(c, d.job, &t.record.job_id)
                .await?
                .ok_or_else(|| StoreError::Corrupt("a conflicting job vanished".into()))?;
            out.push(Some(existing));
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
    held: &mut Held,
    job_id: &str,
    command: &Command,
    now: i64,
) -> Result<Result<Logged, TransitionError>, StoreError> {
    let current = match held.0.remove(job_id) {
        Some(r) => Some(r),
        // Not locked at the start (SQLite locks nothing per job), or
        // inserted by this batch after the lock.
        None => reads::load_job(c, d.job_for_update, job_id).await?,
    };
    let current = current.filter(|r| command.sees_tenant(&r.tenant));
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
