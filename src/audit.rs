//! The tamper-evident audit log: entry encoding, chain hashing and
//! verification. Pure: the store appends and reads rows; this module says
//! what their hashes must be.
//!
//! `entry_hash = sha256(prev_hash ‖ JCS(entry))`, where `entry` is the
//! object `{chain, seq, at, actor, job_id, snapshot_id, kind, body}`, with
//! `tenant` added when the entry has one (entries written before tenants
//! existed hash as they always did), and
//! `prev_hash` is the previous entry's hash in hex (64 zeros for the first
//! entry of a chain). Each replica appends to its own chain.

use crate::canonical::{sha256_hex, to_jcs, write_jcs, write_string};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The `prev_hash` of a chain's first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Defines the event kinds once: each variant and its stored name.
macro_rules! kinds {
    ($($variant:ident => $name:literal,)*) => {
        /// What an audit entry records (SPEC §10). The stored and wire name
        /// of each kind is written here and nowhere else.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum EventKind {
            $($variant,)*
        }

        impl EventKind {
            pub const ALL: &[EventKind] = &[$(EventKind::$variant,)*];

            /// The name stored in the log, e.g. `bind_refused`.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $name,)*
                }
            }
        }
    };
}

kinds! {
    Decision => "decision",
    Approval => "approval",
    Rejection => "rejection",
    Override => "override",
    OverrideAck => "override_ack",
    Cancel => "cancel",
    Escalation => "escalation",
    Expiry => "expiry",
    Bind => "bind",
    BindRefused => "bind_refused",
    Outcome => "outcome",
    PolicyReload => "policy_reload",
    SnapshotRevoked => "snapshot_revoked",
}

impl EventKind {
    /// The kind a stored name names, when it names one.
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.iter().copied().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event to append: what happened, by whom, to which job under which
/// snapshot. The store gives it its place in the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    pub kind: EventKind,
    pub actor: String,
    /// Empty for events about no job (policy reloads, revocations).
    pub job_id: String,
    pub snapshot_id: String,
    /// The tenant whose job or policy it is; empty for none.
    pub tenant: String,
    pub body: Body,
}

/// An event's body: a JSON value, or the RFC 8785 text of one, for a body
/// written straight to text (a decision's: one per Decide).
#[derive(Debug, Clone, PartialEq)]
pub enum Body {
    Value(Value),
    Canonical(String),
}

impl From<Value> for Body {
    fn from(v: Value) -> Body {
        Body::Value(v)
    }
}

impl Body {
    /// The body's RFC 8785 text: the stored and hashed form.
    pub fn into_jcs(self) -> String {
        match self {
            Body::Value(v) => to_jcs(&v),
            Body::Canonical(text) => text,
        }
    }

    /// The body as a JSON value.
    pub fn to_value(&self) -> Result<Value, serde_json::Error> {
        match self {
            Body::Value(v) => Ok(v.clone()),
            Body::Canonical(text) => serde_json::from_str(text),
        }
    }
}

impl AuditEvent {
    /// A snapshot became the active one of its scope.
    pub fn policy_reload(
        actor: &str,
        scope: &str,
        tenant: &str,
        snapshot_id: &str,
        name: &str,
        rules: i64,
        previous: Option<&str>,
    ) -> AuditEvent {
        AuditEvent {
            kind: EventKind::PolicyReload,
            actor: actor.to_owned(),
            job_id: String::new(),
            snapshot_id: snapshot_id.to_owned(),
            tenant: tenant.to_owned(),
            body: json!({ "previous": previous, "name": name, "rules": rules, "scope": scope })
                .into(),
        }
    }

    /// A snapshot was revoked: its jobs can no longer be bound.
    pub fn snapshot_revoked(
        actor: &str,
        snapshot_id: &str,
        tenant: &str,
        reason: &str,
    ) -> AuditEvent {
        AuditEvent {
            kind: EventKind::SnapshotRevoked,
            actor: actor.to_owned(),
            job_id: String::new(),
            snapshot_id: snapshot_id.to_owned(),
            tenant: tenant.to_owned(),
            body: json!({ "reason": reason }).into(),
        }
    }
}

/// One stored audit entry, with its body as a JSON value; an entry just
/// appended ([`Appended`]) holds the body's RFC 8785 text instead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry<B = Value> {
    pub chain: String,
    pub seq: i64,
    pub prev_hash: String,
    pub entry_hash: String,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    pub actor: String,
    pub job_id: String,
    pub snapshot_id: String,
    /// The tenant whose job or policy it is; empty for none.
    #[serde(default)]
    pub tenant: String,
    /// Kept as stored: a tampered row with an unknown kind must still be
    /// read, so verification can name it.
    pub kind: String,
    pub body: B,
}

impl AuditEntry {
    /// The hash this entry's content and `prev_hash` imply:
    /// `sha256(prev_hash ‖ JCS({chain, seq, at, actor, job_id, snapshot_id, kind, body[, tenant]}))`.
    pub fn expected_hash(&self) -> String {
        self.hash_with_body(&to_jcs(&self.body))
    }
}

impl<B> AuditEntry<B> {
    /// The entry hash, given the body's RFC 8785 text (the stored form),
    /// so the body is written once for both the hash and the row.
    fn hash_with_body(&self, body_jcs: &str) -> String {
        // The entry object in RFC 8785 order: its keys are ASCII, so they
        // sort as written here.
        let mut text = String::with_capacity(self.prev_hash.len() + body_jcs.len() + 256);
        text.push_str(&self.prev_hash);
        text.push_str("{\"actor\":");
        write_string(&mut text, &self.actor);
        text.push_str(",\"at\":");
        write_jcs(&mut text, &Value::from(self.at));
        text.push_str(",\"body\":");
        text.push_str(body_jcs);
        text.push_str(",\"chain\":");
        write_string(&mut text, &self.chain);
        text.push_str(",\"job_id\":");
        write_string(&mut text, &self.job_id);
        text.push_str(",\"kind\":");
        write_string(&mut text, &self.kind);
        text.push_str(",\"seq\":");
        write_jcs(&mut text, &Value::from(self.seq));
        text.push_str(",\"snapshot_id\":");
        write_string(&mut text, &self.snapshot_id);
        if !self.tenant.is_empty() {
            text.push_str(",\"tenant\":");
            write_string(&mut text, &self.tenant);
        }
        text.push('}');
        sha256_hex(text.as_bytes())
    }
}

/// An entry just appended to a chain, as it is stored: its body is RFC
/// 8785 text, never parsed back on the write path.
pub type Appended = AuditEntry<String>;

impl Appended {
    /// The entry as it reads back from the store.
    pub fn into_entry(self) -> Result<AuditEntry, serde_json::Error> {
        Ok(AuditEntry {
            body: serde_json::from_str(&self.body)?,
            chain: self.chain,
            seq: self.seq,
            prev_hash: self.prev_hash,
            entry_hash: self.entry_hash,
            at: self.at,
            actor: self.actor,
            job_id: self.job_id,
            snapshot_id: self.snapshot_id,
            tenant: self.tenant,
            kind: self.kind,
        })
    }
}

/// The head of one chain while entries are appended to it: the last seq
/// and hash. Both stores append through this, so an entry is built the
/// same way whichever database holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub chain: String,
    pub seq: i64,
    pub hash: String,
}

impl ChainHead {
    /// The head of a chain with no entries.
    pub fn genesis(chain: &str) -> ChainHead {
        ChainHead {
            chain: chain.to_owned(),
            seq: 0,
            hash: GENESIS.to_owned(),
        }
    }

    /// The next entry of the chain for `event` at `at`, and the head
    /// moved past it.
    pub fn append(&mut self, event: AuditEvent, at: i64) -> Appended {
        let mut entry = Appended {
            chain: self.chain.clone(),
            seq: self.seq + 1,
            prev_hash: self.hash.clone(),
            entry_hash: String::new(),
            at,
            actor: event.actor,
            job_id: event.job_id,
            snapshot_id: event.snapshot_id,
            tenant: event.tenant,
            kind: event.kind.as_str().to_owned(),
            body: event.body.into_jcs(),
        };
        entry.entry_hash = entry.hash_with_body(&entry.body);
        self.seq = entry.seq;
        self.hash.clone_from(&entry.entry_hash);
        entry
    }
}

/// The verdict on one chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainReport {
    pub chain: String,
    pub entries: u64,
    pub head_hash: String,
    pub ok: bool,
    /// The first entry that does not verify, and why.
    pub first_bad_seq: Option<i64>,
    pub problem: Option<String>,
}

/// Incremental verification of one chain, fed entries in `seq` order.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    report: ChainReport,
    expected_seq: i64,
}

impl ChainVerifier {
    pub fn new(chain: &str) -> ChainVerifier {
        ChainVerifier {
            report: ChainReport {
                chain: chain.to_owned(),
                entries: 0,
                head_hash: GENESIS.to_owned(),
                ok: true,
                first_bad_seq: None,
                problem: None,
            },
            expected_seq: 1,
        }
    }

    /// Checks the next entry; after the first problem, later entries are
    /// only counted.
    pub fn push(&mut self, e: &AuditEntry) {
        self.report.entries += 1;
        if !self.report.ok {
            return;
        }
        let problem = if e.seq != self.expected_seq {
            Some(format!(
                "expected seq {}, found {} (an entry is missing or inserted)",
                self.expected_seq, e.seq
            ))
        } else if e.prev_hash != self.report.head_hash {
            Some(format!(
                "prev_hash {} does not match the previous entry's hash {}",
                e.prev_hash, self.report.head_hash
            ))
        } else {
            let want = e.expected_hash();
            (want != e.entry_hash).then(|| {
                format!("entry_hash {} does not match its content (expected {want}): the entry was modified", e.entry_hash)
            })
        };
        match problem {
            Some(p) => {
                self.report.ok = false;
                self.report.first_bad_seq = Some(e.seq);
                self.report.problem = Some(p);
            }
            None => {
                self.report.head_hash = e.entry_hash.clone();
                self.expected_seq += 1;
            }
        }
    }

    pub fn finish(self) -> ChainReport {
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: i64) -> Vec<AuditEntry> {
        let mut head = ChainHead::genesis("main");
        (1..=n)
            .map(|seq| {
                let event = AuditEvent {
                    kind: EventKind::Approval,
                    actor: "alice".into(),
                    job_id: "job-1".into(),
                    snapshot_id: "snap".into(),
                    tenant: if seq % 2 == 0 {
                        "pay".into()
                    } else {
                        String::new()
                    },
                    body: json!({ "n": seq }).into(),
                };
                head.append(event, 1000 + seq).into_entry().unwrap()
            })
            .collect()
    }

    /// The hash as SPEC §10 defines it, built the plain way.
    fn plain_hash(e: &AuditEntry) -> String {
        let mut entry = json!({
            "chain": e.chain,
            "seq": e.seq,
            "at": e.at,
            "actor": e.actor,
            "job_id": e.job_id,
            "snapshot_id": e.snapshot_id,
            "kind": e.kind,
            "body": e.body,
        });
        if !e.tenant.is_empty() {
            entry["tenant"] = json!(e.tenant);
        }
        sha256_hex(format!("{}{}", e.prev_hash, to_jcs(&entry)).as_bytes())
    }

    #[test]
    fn the_hash_is_the_plain_construction() {
        let mut head = ChainHead::genesis("ré\"plica");
        let event = AuditEvent {
            kind: EventKind::BindRefused,
            actor: "a\\b \u{1F600}".into(),
            job_id: "job:1".into(),
            snapshot_id: String::new(),
            tenant: "t\u{e9}".into(),
            body: json!({ "z": [1.5, -0.0, 1e21], "a": { "\u{e000}": null, "b": "\n" } }).into(),
        };
        let body = event.body.to_value().unwrap();
        let appended = head.append(event, -5);
        assert_eq!(appended.body, to_jcs(&body));
        let e = appended.into_entry().unwrap();
        assert_eq!(to_jcs(&e.body), to_jcs(&body), "the stored text reads back");
        assert_eq!(e.entry_hash, plain_hash(&e));
        assert_eq!(e.expected_hash(), plain_hash(&e));
        let next = head
            .append(
                AuditEvent {
                    kind: EventKind::Decision,
                    actor: String::new(),
                    job_id: String::new(),
                    snapshot_id: "s".into(),
                    tenant: String::new(),
                    body: Body::Canonical("{}".into()),
                },
                i64::MAX,
            )
            .into_entry()
            .unwrap();
        assert_eq!(next.entry_hash, plain_hash(&next));
    }

    #[test]
    fn appending_links_each_entry_to_the_last() {
        let c = chain(3);
        assert_eq!(c[0].prev_hash, GENESIS);
        assert_eq!(c[0].seq, 1);
        assert_eq!(c[1].prev_hash, c[0].entry_hash);
        assert_eq!(c[2].seq, 3);
        assert_eq!(c[2].kind, "approval");
        // The hash covers the content: a changed body is a changed hash.
        let mut other = c[2].clone();
        other.body = json!({ "n": 4 });
        assert_ne!(other.expected_hash(), c[2].entry_hash);
    }

    #[test]
    fn every_kind_round_trips_through_its_name() {
        for &k in EventKind::ALL {
            assert_eq!(EventKind::parse(k.as_str()), Some(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert_eq!(EventKind::parse("update"), None);
    }

    fn verify(entries: &[AuditEntry]) -> ChainReport {
        let mut v = ChainVerifier::new("main");
        for e in entries {
            v.push(e);
        }
        v.finish()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let r = verify(&chain(5));
        assert!(r.ok, "{r:?}");
        assert_eq!(r.entries, 5);
        assert_eq!(r.head_hash, chain(5)[4].entry_hash);
    }

    #[test]
    fn tampering_names_the_first_bad_entry() {
        let mut c = chain(5);
        c[2].actor = "mallory".into();
        let r = verify(&c);
        assert!(!r.ok);
        assert_eq!(r.first_bad_seq, Some(3));
        assert!(r.problem.unwrap().contains("modified"));

        let mut c = chain(5);
        c[1].tenant = "other".into();
        assert_eq!(verify(&c).first_bad_seq, Some(2), "a moved tenant is seen");
        let mut c = chain(5);
        c[0].tenant = "pay".into();
        assert_eq!(verify(&c).first_bad_seq, Some(1), "an added tenant is seen");

        let mut c = chain(5);
        c.remove(1);
        assert_eq!(verify(&c).first_bad_seq, Some(3));

        // Rewriting an entry and its hash breaks the next link.
        let mut c = chain(5);
        c[1].body = json!({"n": 99});
        c[1].entry_hash = c[1].expected_hash();
        let r = verify(&c);
        assert_eq!(r.first_bad_seq, Some(3));
        assert!(r.problem.unwrap().contains("prev_hash"));
    }
}
