//! Outbox delivery in the store: routing a message to its channels,
//! claiming due deliveries with a lease, and recording how a send ended.
//! Each runs as one write in the backend's transaction; the guards (the
//! outbox row still unrouted, the lease still ours) make replicas racing
//! for the same rows end with one owner.

use super::conn::{Arg, Columns, Conn};
use super::rows::{self, outbox_columns};
use super::{OutboxRow, StoreError};

/// One message on its way to one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryRow {
    /// `<outbox id>@<channel>`.
    pub id: String,
    pub channel: String,
    /// `pending`, `delivered` or `dead`.
    pub state: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub lease_owner: Option<String>,
    pub lease_until: Option<i64>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
    /// The message itself.
    pub message: OutboxRow,
}

/// How one send ended.
#[derive(Debug, Clone, PartialEq)]
pub enum DeliveryResult {
    Delivered,
    /// Try again at this time.
    Retry {
        at: i64,
        error: String,
    },
    /// No more tries: the dead-letter state.
    Dead {
        error: String,
    },
}

/// A change to deliveries.
#[derive(Debug, Clone)]
pub(crate) enum DeliveryOp {
    /// Fans an unrouted outbox row out to these channels (none: it is
    /// routed nowhere) and marks it routed.
    Route {
        outbox_id: String,
        channels: Vec<String>,
        now: i64,
    },
    /// Takes up to `limit` due deliveries whose lease is free or expired.
    Claim {
        owner: String,
        now: i64,
        lease_ms: i64,
        limit: i64,
    },
    /// Remembers the Slack message a job got in a channel (the first one stays).
    SaveSlack {
        job_id: String,
        channel: String,
        slack_channel: String,
        ts: String,
    },
    /// Records an interaction's signature; changes one row only the first
    /// time. Signatures older than `forget_before` are dropped.
    Seen {
        signature: String,
        now: i64,
        forget_before: i64,
    },
    /// Records a send's end, if the lease is still `owner`'s.
    Finish {
        id: String,
        owner: String,
        result: DeliveryResult,
        now: i64,
    },
}

const MARK_ROUTED: &str = "UPDATE outbox SET state = 'routed' WHERE id = $1 AND state = 'pending'";
const INSERT_DELIVERY: &str = "INSERT INTO deliveries (id, outbox_id, channel, next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING";
// The lease test is in the outer WHERE too, so on PostgreSQL a row another
// replica claimed meanwhile is re-checked and skipped.
const CLAIM: &str = "UPDATE deliveries SET lease_owner = $1, lease_until = $2 \
    WHERE state = 'pending' AND next_attempt_at <= $3 AND (lease_until IS NULL OR lease_until <= $3) \
    AND id IN (SELECT id FROM deliveries WHERE state = 'pending' AND next_attempt_at <= $3 \
    AND (lease_until IS NULL OR lease_until <= $3) ORDER BY next_attempt_at, id LIMIT $4)";
const CLAIMED_BY: &str = concat!(
    "SELECT d.id AS d_id, d.channel, d.state AS d_state, d.attempts AS d_attempts, ",
    "d.next_attempt_at AS d_next, d.lease_owner, d.lease_until, d.last_error, ",
    "d.created_at AS d_created, d.delivered_at, o.",
    "id, o.kind, o.job_id, o.job_version, o.tenant, o.body, o.created_at, o.state, o.attempts, o.next_attempt_at",
    " FROM deliveries d JOIN outbox o ON o.id = d.outbox_id",
    " WHERE d.lease_owner = $1 AND d.lease_until = $2 AND d.state = 'pending' ORDER BY d.next_attempt_at, d.id"
);
const LISTED: &str = concat!(
    "SELECT d.id AS d_id, d.channel, d.state AS d_state, d.attempts AS d_attempts, ",
    "d.next_attempt_at AS d_next, d.lease_owner, d.lease_until, d.last_error, ",
    "d.created_at AS d_created, d.delivered_at, o.",
    "id, o.kind, o.job_id, o.job_version, o.tenant, o.body, o.created_at, o.state, o.attempts, o.next_attempt_at",
    " FROM deliveries d JOIN outbox o ON o.id = d.outbox_id",
    " WHERE ($1 = '' OR d.state = $1) ORDER BY d.created_at DESC, d.id LIMIT $2"
);
const DELIVERED: &str = "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, delivered_at = $1, lease_owner = NULL, lease_until = NULL, last_error = NULL WHERE id = $2 AND lease_owner = $3 AND state = 'pending'";
const RETRY: &str = "UPDATE deliveries SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2, lease_owner = NULL, lease_until = NULL WHERE id = $3 AND lease_owner = $4 AND state = 'pending'";
const DEAD: &str = "UPDATE deliveries SET state = 'dead', attempts = attempts + 1, last_error = $1, lease_owner = NULL, lease_until = NULL WHERE id = $2 AND lease_owner = $3 AND state = 'pending'";
const SAVE_SLACK: &str = "INSERT INTO slack_messages (job_id, channel, slack_channel, ts) VALUES ($1, $2, $3, $4) ON CONFLICT (job_id, channel) DO NOTHING";
const FORGET_SEEN: &str = "DELETE FROM slack_seen WHERE seen_at < $1";
const SEEN: &str = "INSERT INTO slack_seen (signature, seen_at) VALUES ($1, $2) ON CONFLICT (signature) DO NOTHING";
const SLACK_MESSAGE: &str =
    "SELECT slack_channel, ts FROM slack_messages WHERE job_id = $1 AND channel = $2";

/// The Slack message (Slack channel id, ts) a job got in a gavel channel.
pub(crate) async fn slack_message<C: Conn>(
    c: &mut C,
    job_id: &str,
    channel: &str,
) -> Result<Option<(String, String)>, StoreError> {
    match c
        .fetch_optional(SLACK_MESSAGE, &[Arg::Text(job_id), Arg::Text(channel)])
        .await?
    {
        Some(r) => Ok(Some((r.text("slack_channel")?, r.text("ts")?))),
        None => Ok(None),
    }
}

const UNROUTED: &str = concat!(
    "SELECT ",
    outbox_columns!(),
    " FROM outbox WHERE state = 'pending' ORDER BY created_at, id LIMIT $1"
);

fn delivery(row: &impl Columns) -> Result<DeliveryRow, StoreError> {
    Ok(DeliveryRow {
        id: row.text("d_id")?,
        channel: row.text("channel")?,
        state: row.text("d_state")?,
        attempts: row.int("d_attempts")?,
        next_attempt_at: row.int("d_next")?,
        lease_owner: row.opt_text("lease_owner")?,
        lease_until: row.opt_int("lease_until")?,
        last_error: row.opt_text("last_error")?,
        created_at: row.int("d_created")?,
        delivered_at: row.opt_int("delivered_at")?,
        message: rows::outbox(row)?,
    })
}

/// Runs one delivery change; answers the deliveries it claimed (empty
/// for the other changes) and how many rows it changed.
pub(crate) async fn run<C: Conn>(
    c: &mut C,
    op: &DeliveryOp,
) -> Result<(Vec<DeliveryRow>, u64), StoreError> {
    match op {
        DeliveryOp::Route {
            outbox_id,
            channels,
            now,
        } => {
            let marked = c.execute(MARK_ROUTED, &[Arg::Text(outbox_id)]).await?;
            if marked == 0 {
                // Another replica routed it first.
                return Ok((vec![], 0));
            }
            for ch in channels {
                let id = format!("{outbox_id}@{ch}");
                c.execute(
                    INSERT_DELIVERY,
                    &[
                        Arg::Text(&id),
                        Arg::Text(outbox_id),
                        Arg::Text(ch),
                        Arg::Int(*now),
                        Arg::Int(*now),
                    ],
                )
                .await?;
            }
            Ok((vec![], marked))
        }
        DeliveryOp::Claim {
            owner,
            now,
            lease_ms,
            limit,
        } => {
            let until = now.saturating_add(*lease_ms);
            let n = c
                .execute(
                    CLAIM,
                    &[
                        Arg::Text(owner),
                        Arg::Int(until),
                        Arg::Int(*now),
                        Arg::Int(*limit),
                    ],
                )
                .await?;
            if n == 0 {
                return Ok((vec![], 0));
            }
            let rows = c
                .fetch_all(CLAIMED_BY, &[Arg::Text(owner), Arg::Int(until)])
                .await?
                .iter()
                .map(delivery)
                .collect::<Result<Vec<_>, _>>()?;
            Ok((rows, n))
        }
        DeliveryOp::SaveSlack {
            job_id,
            channel,
            slack_channel,
            ts,
        } => {
            let n = c
                .execute(
                    SAVE_SLACK,
                    &[
                        Arg::Text(job_id),
                        Arg::Text(channel),
                        Arg::Text(slack_channel),
                        Arg::Text(ts),
                    ],
                )
                .await?;
            Ok((vec![], n))
        }
        DeliveryOp::Seen {
            signature,
            now,
            forget_before,
        } => {
            c.execute(FORGET_SEEN, &[Arg::Int(*forget_before)]).await?;
            let n = c
                .execute(SEEN, &[Arg::Text(signature), Arg::Int(*now)])
                .await?;
            Ok((vec![], n))
        }
        DeliveryOp::Finish {
            id,
            owner,
            result,
            now,
        } => {
            let n = match result {
                DeliveryResult::Delivered => {
                    c.execute(
                        DELIVERED,
                        &[Arg::Int(*now), Arg::Text(id), Arg::Text(owner)],
                    )
                    .await?
                }
                DeliveryResult::Retry { at, error } => {
                    c.execute(
                        RETRY,
                        &[
                            Arg::Int(*at),
                            Arg::Text(error),
                            Arg::Text(id),
                            Arg::Text(owner),
                        ],
                    )
                    .await?
                }
                DeliveryResult::Dead { error } => {
                    c.execute(DEAD, &[Arg::Text(error), Arg::Text(id), Arg::Text(owner)])
                        .await?
                }
            };
            Ok((vec![], n))
        }
    }
}

/// Outbox rows not yet routed, oldest first.
pub(crate) async fn unrouted<C: Conn>(c: &mut C, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
    c.fetch_all(UNROUTED, &[Arg::Int(limit)])
        .await?
        .iter()
        .map(rows::outbox)
        .collect()
}

/// Deliveries, newest first, in one state (empty: every state).
pub(crate) async fn list<C: Conn>(
    c: &mut C,
    state: &str,
    limit: i64,
) -> Result<Vec<DeliveryRow>, StoreError> {
    c.fetch_all(LISTED, &[Arg::Text(state), Arg::Int(limit)])
        .await?
        .iter()
        .map(delivery)
        .collect()
}
