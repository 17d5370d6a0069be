//! The tamper-evident audit log: entry encoding, chain hashing and
//! verification. Pure: the store appends and reads rows; this module says
//! what their hashes must be.
//!
//! `entry_hash = sha256(prev_hash ‖ JCS(entry))`, where `entry` is the
//! object `{chain, seq, at, actor, job_id, snapshot_id, kind, body}` and
//! `prev_hash` is the previous entry's hash in hex (64 zeros for the first
//! entry of a chain). Each replica appends to its own chain.

use crate::canonical::{sha256_hex, to_jcs};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The `prev_hash` of a chain's first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One stored audit entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub chain: String,
    pub seq: i64,
    pub prev_hash: String,
    pub entry_hash: String,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    pub actor: String,
    pub job_id: String,
    pub snapshot_id: String,
    pub kind: String,
    pub body: Value,
}

/// The hash an entry must carry, given its fields and its predecessor's hash.
#[allow(clippy::too_many_arguments)]
pub fn entry_hash(
    prev_hash: &str,
    chain: &str,
    seq: i64,
    at: i64,
    actor: &str,
    job_id: &str,
    snapshot_id: &str,
    kind: &str,
    body: &Value,
) -> String {
    let entry = json!({
        "chain": chain,
        "seq": seq,
        "at": at,
        "actor": actor,
        "job_id": job_id,
        "snapshot_id": snapshot_id,
        "kind": kind,
        "body": body,
    });
    let mut bytes = prev_hash.as_bytes().to_vec();
    bytes.extend_from_slice(to_jcs(&entry).as_bytes());
    sha256_hex(&bytes)
}

impl AuditEntry {
    /// The hash this entry's content implies.
    pub fn expected_hash(&self) -> String {
        entry_hash(
            &self.prev_hash,
            &self.chain,
            self.seq,
            self.at,
            &self.actor,
            &self.job_id,
            &self.snapshot_id,
            &self.kind,
            &self.body,
        )
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
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let body = json!({ "n": seq });
                let h = entry_hash(
                    &prev,
                    "main",
                    seq,
                    1000 + seq,
                    "alice",
                    "job-1",
                    "snap",
                    "approval",
                    &body,
                );
                let e = AuditEntry {
                    chain: "main".into(),
                    seq,
                    prev_hash: prev.clone(),
                    entry_hash: h.clone(),
                    at: 1000 + seq,
                    actor: "alice".into(),
                    job_id: "job-1".into(),
                    snapshot_id: "snap".into(),
                    kind: "approval".into(),
                    body,
                };
                prev = h;
                e
            })
            .collect()
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
