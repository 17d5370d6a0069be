//! Bind receipts: a compact JWS (RFC 7515, `alg: EdDSA`, Ed25519 per RFC
//! 8037) over `{job_id, job_hash, policy_snapshot, decision, bind_id,
//! approvers, constraints, iat, exp}`, so an executor or an auditor can
//! check offline, with the public key (JWKS), that exactly this job was bound
//! under exactly this snapshot. The payload is RFC 8785 JSON.

use crate::canonical::{sha256_hex, to_jcs};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde_json::{Value, json};
use std::path::Path;

/// How long a receipt is valid for, in seconds.
pub const RECEIPT_LIFETIME_SECS: i64 = 24 * 3600;

/// The JWS `typ` of a bind receipt.
pub const RECEIPT_TYP: &str = "gavel-receipt+jwt";

/// The server's receipt signing key.
pub struct ReceiptSigner {
    key: SigningKey,
    kid: String,
}

/// A receipt that does not verify, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("receipt: {0}")]
pub struct ReceiptError(pub String);

fn kid_of(public: &VerifyingKey) -> String {
    sha256_hex(public.as_bytes())[..16].to_owned()
}

impl ReceiptSigner {
    pub fn from_seed(seed: [u8; 32]) -> ReceiptSigner {
        let key = SigningKey::from_bytes(&seed);
        let kid = kid_of(&key.verifying_key());
        ReceiptSigner { key, kid }
    }

    /// Loads the key from `path` (64 hex characters: the Ed25519 seed), or
    /// creates one there, readable by its owner only. Replicas that should
    /// sign with one key point at one file.
    pub fn load_or_create(path: &Path) -> Result<ReceiptSigner, ReceiptError> {
        let shown = path.display();
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim())
                    .map_err(|_| ReceiptError(format!("{shown}: not 64 hex characters")))?;
                let seed: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| ReceiptError(format!("{shown}: not 64 hex characters")))?;
                Ok(ReceiptSigner::from_seed(seed))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                getrandom::fill(&mut seed)
                    .map_err(|e| ReceiptError(format!("no randomness: {e}")))?;
                write_private(path, &hex::encode(seed))
                    .map_err(|e| ReceiptError(format!("{shown}: cannot write: {e}")))?;
                Ok(ReceiptSigner::from_seed(seed))
            }
            Err(e) => Err(ReceiptError(format!("{shown}: cannot read: {e}"))),
        }
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key as a JWKS document.
    pub fn jwks(&self) -> Value {
        jwks(&self.key.verifying_key(), &self.kid)
    }

    /// Signs a receipt payload (RFC 8785 JSON) as a compact JWS.
    pub fn sign(&self, payload: &Value) -> String {
        self.sign_typed(payload, RECEIPT_TYP)
    }

    /// Signs a payload as a compact JWS of the given `typ`, so a document
    /// of one kind (a receipt, an audit checkpoint) never passes for the
    /// other.
    pub fn sign_typed(&self, payload: &Value, typ: &str) -> String {
        let header = json!({ "alg": "EdDSA", "kid": self.kid, "typ": typ });
        let signing_input = format!(
            "{}.{}",
            B64.encode(to_jcs(&header)),
            B64.encode(to_jcs(payload))
        );
        let sig = self.key.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", B64.encode(sig.to_bytes()))
    }
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(text.as_bytes())
}

/// A JWKS document holding one Ed25519 public key.
pub fn jwks(public: &VerifyingKey, kid: &str) -> Value {
    json!({
        "keys": [{
            "kty": "OKP",
            "crv": "Ed25519",
            "alg": "EdDSA",
            "use": "sig",
            "kid": kid,
            "x": B64.encode(public.as_bytes()),
        }]
    })
}

/// What a receipt says about one bind.
#[derive(Debug, Clone)]
pub struct Claims<'a> {
    pub job_id: &'a str,
    pub job_hash: &'a str,
    pub policy_snapshot: &'a str,
    pub decision: &'a str,
    pub bind_id: &'a str,
    /// Who approved, in order.
    pub approvers: Vec<&'a str>,
    pub constraints: &'a Value,
    /// Issued at, seconds since the epoch; the receipt expires a day later.
    pub iat: i64,
    /// The bind's audit entry: chain, seq and entry hash.
    pub audit: Option<(&'a str, i64, &'a str)>,
}

/// The receipt payload for a bind.
pub fn payload(c: &Claims<'_>) -> Value {
    let mut p = json!({
        "job_id": c.job_id,
        "job_hash": c.job_hash,
        "policy_snapshot": c.policy_snapshot,
        "decision": c.decision,
        "bind_id": c.bind_id,
        "approvers": c.approvers,
        "constraints": c.constraints,
        "iat": c.iat,
        "exp": c.iat + RECEIPT_LIFETIME_SECS,
    });
    if let Some((chain, seq, entry_hash)) = c.audit {
        p["audit"] = json!({ "chain": chain, "seq": seq, "entry_hash": entry_hash });
    }
    p
}

/// Verifies a receipt against a JWKS document and returns its payload.
/// Expiry is the caller's to judge (`exp`, seconds since the epoch).
pub fn verify(receipt: &str, jwks: &Value) -> Result<Value, ReceiptError> {
    verify_typed(receipt, jwks, RECEIPT_TYP)
}

/// Verifies a compact JWS of the given `typ` against a JWKS document and
/// returns its payload.
pub fn verify_typed(receipt: &str, jwks: &Value, typ: &str) -> Result<Value, ReceiptError> {
    let bad = |m: &str| ReceiptError(m.to_owned());
    let mut parts = receipt.trim().split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad("not a compact JWS (three dot-separated parts)"));
    };
    let header: Value =
        serde_json::from_slice(&B64.decode(h).map_err(|_| bad("header is not base64url"))?)
            .map_err(|_| bad("header is not JSON"))?;
    if header["alg"] != "EdDSA" {
        return Err(bad("alg must be EdDSA"));
    }
    if header["typ"] != typ {
        return Err(ReceiptError(format!(
            "typ is {}, not {typ}: this is another kind of signed document",
            header["typ"]
        )));
    }
    let kid = header["kid"]
        .as_str()
        .ok_or_else(|| bad("header has no kid"))?;
    let key = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == kid))
        .ok_or_else(|| ReceiptError(format!("no key `{kid}` in the JWKS")))?;
    if key["kty"] != "OKP" || key["crv"] != "Ed25519" {
        return Err(bad("the key is not an Ed25519 key"));
    }
    let x: [u8; 32] = B64
        .decode(key["x"].as_str().unwrap_or(""))
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("the key's x is not 32 bytes of base64url"))?;
    let public =
        VerifyingKey::from_bytes(&x).map_err(|_| bad("the key is not a valid Ed25519 point"))?;
    let sig: [u8; 64] = B64
        .decode(s)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| bad("the signature is not 64 bytes of base64url"))?;
    public
        .verify(format!("{h}.{p}").as_bytes(), &Signature::from_bytes(&sig))
        .map_err(|_| {
            bad("the signature does not verify: the receipt was altered or signed by another key")
        })?;
    serde_json::from_slice(&B64.decode(p).map_err(|_| bad("payload is not base64url"))?)
        .map_err(|_| bad("payload is not JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_verify_and_tampering_is_caught() {
        let signer = ReceiptSigner::from_seed([7; 32]);
        let (a, b, none) = ("a".repeat(64), "b".repeat(64), json!({}));
        let claims = |hash| Claims {
            job_id: "j",
            job_hash: hash,
            policy_snapshot: "cfg:x",
            decision: "allow",
            bind_id: "b1",
            approvers: vec!["alice"],
            constraints: &none,
            iat: 1000,
            audit: Some(("main", 7, "c")),
        };
        let p = payload(&claims(&a));
        assert_eq!(
            p["audit"],
            json!({ "chain": "main", "seq": 7, "entry_hash": "c" })
        );
        let r = signer.sign(&p);
        assert_eq!(verify(&r, &signer.jwks()).unwrap(), p);
        // Change one character of the payload.
        let mut parts: Vec<String> = r.split('.').map(str::to_owned).collect();
        let other = payload(&claims(&b));
        parts[1] = B64.encode(to_jcs(&other));
        assert!(verify(&parts.join("."), &signer.jwks()).is_err());
        // Another key.
        let stranger = ReceiptSigner::from_seed([8; 32]);
        assert!(verify(&r, &stranger.jwks()).is_err());
        assert!(verify("a.b", &signer.jwks()).is_err());
    }

    #[test]
    fn keys_are_created_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/receipt.key");
        let a = ReceiptSigner::load_or_create(&path).unwrap();
        let b = ReceiptSigner::load_or_create(&path).unwrap();
        assert_eq!(a.kid(), b.kid());
        std::fs::write(&path, "nonsense").unwrap();
        assert!(ReceiptSigner::load_or_create(&path).is_err());
    }
}
