//! Signed checkpoints of the audit chains. A hash chain shows an entry
//! changed in place, but not its own tail cut off, nor the whole log
//! rewritten and re-hashed. A checkpoint is a chain's head (`chain`,
//! `seq`, `entry_hash`, `at`) signed with the receipt key and kept outside
//! the database; against it, verification finds both.
//!
//! A checkpoint is a compact JWS (`typ` `gavel-checkpoint+jwt`, EdDSA),
//! one per line in a checkpoint file. Pure: signing and checking; the
//! engine reads heads and the server writes the file.

use crate::receipt::{ReceiptError, ReceiptSigner, verify_typed};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The JWS `typ` of a checkpoint.
pub const TYP: &str = "gavel-checkpoint+jwt";

/// A chain's head at a moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub chain: String,
    pub seq: i64,
    pub entry_hash: String,
    /// When it was signed, milliseconds since the epoch.
    pub at: i64,
}

impl Checkpoint {
    /// The checkpoint as a compact JWS.
    pub fn sign(&self, signer: &ReceiptSigner) -> String {
        signer.sign_typed(&serde_json::to_value(self).unwrap_or_default(), TYP)
    }

    /// Reads a signed checkpoint, checking its signature against `jwks`.
    pub fn verify(jws: &str, jwks: &Value) -> Result<Checkpoint, ReceiptError> {
        let payload = verify_typed(jws, jwks, TYP)?;
        let c: Checkpoint = serde_json::from_value(payload)
            .map_err(|e| ReceiptError(format!("not a checkpoint: {e}")))?;
        if c.seq < 1 || c.entry_hash.len() != 64 || c.chain.is_empty() {
            return Err(ReceiptError(
                "not a checkpoint: empty chain, seq or hash".into(),
            ));
        }
        Ok(c)
    }
}

/// Reads a checkpoint file: one JWS per line; blank lines and lines
/// starting with `#` are skipped. Every other line must verify.
pub fn read_file(text: &str, jwks: &Value) -> Result<Vec<Checkpoint>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let c = Checkpoint::verify(line, jwks).map_err(|e| format!("line {}: {}", n + 1, e.0))?;
        out.push(c);
    }
    Ok(out)
}

/// What the checkpoints say about one chain, given how far it verified:
/// the first problem, as (the seq where it shows, why).
pub fn check_chain(
    checkpoints: &[Checkpoint],
    chain: &str,
    hash_at: impl Fn(i64) -> Option<String>,
    last_seq: i64,
) -> Option<(i64, String)> {
    let mut mine: Vec<&Checkpoint> = checkpoints.iter().filter(|c| c.chain == chain).collect();
    mine.sort_by_key(|c| c.seq);
    for c in mine {
        if c.seq > last_seq {
            return Some((
                last_seq + 1,
                format!(
                    "a checkpoint signed at {} names seq {} (hash {}), but the chain ends at seq {last_seq}: entries were deleted from its end",
                    c.at, c.seq, c.entry_hash
                ),
            ));
        }
        match hash_at(c.seq) {
            Some(h) if h == c.entry_hash => {}
            found => {
                return Some((
                    c.seq,
                    format!(
                        "a checkpoint signed at {} says seq {} has hash {}, the log has {}: the chain was rewritten",
                        c.at,
                        c.seq,
                        c.entry_hash,
                        found.as_deref().unwrap_or("no such entry")
                    ),
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cp(seq: i64, hash: char) -> Checkpoint {
        Checkpoint {
            chain: "main".into(),
            seq,
            entry_hash: hash.to_string().repeat(64),
            at: 1_800_000_000_000,
        }
    }

    #[test]
    fn checkpoints_verify_and_other_documents_do_not_pass() {
        let signer = ReceiptSigner::from_seed([7; 32]);
        let jws = cp(3, 'a').sign(&signer);
        assert_eq!(
            Checkpoint::verify(&jws, &signer.jwks()).unwrap(),
            cp(3, 'a')
        );
        // Another key.
        let other = ReceiptSigner::from_seed([8; 32]);
        assert!(Checkpoint::verify(&jws, &other.jwks()).is_err());
        // A receipt is not a checkpoint, nor the other way round.
        let receipt = signer.sign(&serde_json::to_value(cp(3, 'a')).unwrap());
        assert!(Checkpoint::verify(&receipt, &signer.jwks()).is_err());
        assert!(crate::receipt::verify(&jws, &signer.jwks()).is_err());
        // A file: comments and blank lines skipped, a bad line located.
        let text = format!("# gavel\n\n{jws}\n{}\n", &jws[..jws.len() - 4]);
        let e = read_file(&text, &signer.jwks()).unwrap_err();
        assert!(e.starts_with("line 4:"), "{e}");
        assert_eq!(
            read_file(&format!("{jws}\n"), &signer.jwks())
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn truncation_and_rewrites_are_found() {
        let log = |seq: i64| (1..=5).contains(&seq).then(|| 'a'.to_string().repeat(64));
        let cps = [cp(2, 'a'), cp(5, 'a')];
        assert_eq!(check_chain(&cps, "main", log, 5), None);
        // Another chain's checkpoints do not apply.
        assert_eq!(check_chain(&cps, "other", log, 0), None);
        // Cut after seq 3.
        let (seq, why) = check_chain(&cps, "main", log, 3).unwrap();
        assert_eq!(seq, 4);
        assert!(why.contains("deleted"), "{why}");
        // Rewritten: seq 5 now hashes differently.
        let rewritten = |seq: i64| Some(if seq == 5 { 'b' } else { 'a' }.to_string().repeat(64));
        let (seq, why) = check_chain(&cps, "main", rewritten, 5).unwrap();
        assert_eq!(seq, 5);
        assert!(why.contains("rewritten"), "{why}");
    }
}
