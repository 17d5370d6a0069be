//! What a write transaction produces besides the records, collected while
//! it runs and written just before its commit: audit entries chained on
//! this process's head, outbox messages, and announcements for other
//! processes. Also the [`Dialect`], the few statements that differ
//! between databases.

use super::StoreError;
use super::StoreEvent;
use super::conn::{Arg, Columns, Conn};
use super::rows::{self, OutboxInsert, json_text};
use crate::approval::Effect;
use crate::audit::{Appended, AuditEvent, ChainHead};

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
    /// Creates a chain's head row if missing (`$1` chain, `$2` genesis
    /// hash), where two writers could otherwise both start a chain.
    pub ensure_audit_head: Option<&'static str>,
    /// A chain's head (`$1`), locked where other writers could interleave.
    pub audit_head: &'static str,
    /// Serialises snapshot activation across processes, where needed.
    pub lock_activation: Option<&'static str>,
    /// Reads and locks the jobs with the ids in `$1` (a JSON array), in job
    /// id order, as [`Dialect::job`] reads one, where writers of several
    /// processes could interleave.
    pub lock_jobs: Option<&'static str>,
    /// Announces changes to other processes (`$1` a JSON array of
    /// payloads), where any listen.
    pub notify: Option<&'static str>,
}

/// What a transaction writes besides the records: audit entries chained
/// on this process's head, outbox messages, and announcements. Flushed
/// once, just before the commit.
pub(crate) struct Effects {
    chain: String,
    head: Option<ChainHead>,
    /// Entries with their bodies as RFC 8785 text, as stored.
    audit: Vec<Appended>,
    outbox: Vec<OutboxInsert>,
    announce: Vec<String>,
}

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

    pub(crate) async fn audit<C: Conn>(
        &mut self,
        c: &mut C,
        d: &Dialect,
        event: AuditEvent,
        at: i64,
    ) -> Result<(), StoreError> {
        let head = match self.head.take() {
            Some(h) => h,
            None => {
                // Where writers interleave, the head row exists before it is
                // locked, so two first appends cannot both start from genesis.
                if let Some(ensure) = d.ensure_audit_head {
                    c.execute(
                        ensure,
                        &[Arg::Text(&self.chain), Arg::Text(crate::audit::GENESIS)],
                    )
                    .await?;
                }
                match c
                    .fetch_optional(d.audit_head, &[Arg::Text(&self.chain)])
                    .await?
                {
                    Some(row) => ChainHead {
                        chain: self.chain.clone(),
                        seq: row.int("seq")?,
                        hash: row.text("head_hash")?,
                    },
                    None => ChainHead::genesis(&self.chain),
                }
            }
        };
        let head = self.head.insert(head);
        self.audit.push(head.append(event, at));
        Ok(())
    }

    pub(crate) async fn apply<C: Conn>(
        &mut self,
        c: &mut C,
        d: &Dialect,
        effects: Vec<Effect>,
        at: i64,
    ) -> Result<(), StoreError> {
        for effect in effects {
            match effect {
                Effect::Audit(event) => self.audit(c, d, event, at).await?,
                Effect::Notify(notification) => self.outbox.push(OutboxInsert {
                    key: notification.key(),
                    body: json_text(&notification.body)?,
                    notification,
                    at,
                }),
            }
        }
        Ok(())
    }

    /// How many audit entries were appended so far.
    pub(crate) fn appended(&self) -> usize {
        self.audit.len()
    }

    /// Where the entry appended last stands (the entries are written at
    /// the flush, in the same transaction).
    pub(crate) fn last_entry(&self) -> Option<super::AuditPosition> {
        self.audit.last().map(|e| super::AuditPosition {
            chain: e.chain.clone(),
            seq: e.seq,
            entry_hash: e.entry_hash.clone(),
        })
    }

    /// Announces a change at commit, where anyone listens.
    pub(crate) fn announce(&mut self, d: &Dialect, event: StoreEvent) {
        if d.notify.is_some() {
            self.announce.push(event.payload());
        }
    }

    /// Writes everything collected, in as few statements as the database allows.
    pub(crate) async fn flush<C: Conn>(self, c: &mut C, d: &Dialect) -> Result<(), StoreError> {
        if let Some(head) = &self.head {
            let values: Vec<Vec<Arg>> = self.audit.iter().map(rows::audit_insert).collect();
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
        if let Some(notify) = d.notify.filter(|_| !self.announce.is_empty()) {
            c.execute(notify, &[Arg::Text(&json_text(&self.announce)?)])
                .await?;
        }
        Ok(())
    }
}
