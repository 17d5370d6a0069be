//! The shared-secret signatures gavel makes and checks: its own webhook
//! signature, and Slack's request signature. HMAC-SHA256, compared in
//! constant time, with a freshness window on the timestamp.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// HMAC-SHA256 keyed with `secret` over the concatenation of `parts`.
fn mac(secret: &str, parts: &[&[u8]]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    for p in parts {
        mac.update(p);
    }
    mac
}

/// Whether `signature` is `prefix` and the hex of that HMAC (constant time).
fn mac_matches(secret: &str, parts: &[&[u8]], prefix: &str, signature: &str) -> bool {
    signature
        .strip_prefix(prefix)
        .and_then(|h| hex::decode(h).ok())
        .is_some_and(|given| mac(secret, parts).verify_slice(&given).is_ok())
}

/// Whether `timestamp` (Unix seconds) is within `tolerance_secs` of `now_secs`.
fn fresh(timestamp: &str, now_secs: i64, tolerance_secs: i64) -> Option<i64> {
    let ts = timestamp.parse::<i64>().ok()?;
    ((now_secs - ts).abs() <= tolerance_secs).then_some(ts)
}

/// The signature header value of a webhook body sent at `timestamp`
/// (Unix seconds): `v1=` and the hex HMAC-SHA256, keyed with the channel's
/// secret, of `<timestamp>.<body>`.
pub fn sign_webhook(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    let m = mac(secret, &[ts.as_bytes(), b".", body]);
    format!("v1={}", hex::encode(m.finalize().into_bytes()))
}

/// Checks a webhook signature as a receiver should: the right secret, the
/// exact body, a timestamp within `tolerance_secs` of `now`, compared in
/// constant time.
pub fn verify_webhook(
    secret: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: i64,
) -> bool {
    let Some(ts) = fresh(timestamp, now_secs, tolerance_secs) else {
        return false;
    };
    let ts = ts.to_string();
    mac_matches(secret, &[ts.as_bytes(), b".", body], "v1=", signature)
}

/// Slack's request signature: `v0=` and the hex HMAC-SHA256, keyed with
/// the app's signing secret, of `v0:<timestamp>:<body>`.
pub fn sign_slack(signing_secret: &str, timestamp: &str, body: &[u8]) -> String {
    let m = mac(signing_secret, &[b"v0:", timestamp.as_bytes(), b":", body]);
    format!("v0={}", hex::encode(m.finalize().into_bytes()))
}

/// Whether a Slack request is Slack's: a timestamp within five minutes of
/// `now_secs` and a signature that verifies (constant time).
pub fn verify_slack(
    signing_secret: &str,
    timestamp: &str,
    signature: &str,
    body: &[u8],
    now_secs: i64,
) -> bool {
    fresh(timestamp, now_secs, 300).is_some()
        && mac_matches(
            signing_secret,
            &[b"v0:", timestamp.as_bytes(), b":", body],
            "v0=",
            signature,
        )
}
