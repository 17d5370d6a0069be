//! Everything gavel checks a signature or a header on refuses garbage
//! without panicking: receipts and audit checkpoints (JWS against a
//! JWKS), webhook and Slack signatures, and W3C `traceparent`.
#![no_main]

use gavel::checkpoint::Checkpoint;
use gavel::receipt::ReceiptSigner;
use libfuzzer_sys::fuzz_target;
use std::sync::LazyLock;

static JWKS: LazyLock<serde_json::Value> =
    LazyLock::new(|| ReceiptSigner::from_seed([7; 32]).jwks());

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // Anything accepted must really be signed by the key: the fuzzer
    // cannot forge Ed25519, so acceptance of a fuzzed document is a bug.
    if gavel::receipt::verify(&text, &JWKS).is_ok() || Checkpoint::verify(&text, &JWKS).is_ok() {
        panic!("a document not signed by the key verified: {text:?}");
    }
    let mut parts = text.splitn(3, '\n');
    let (timestamp, signature, body) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("").as_bytes(),
    );
    let now = 1_800_000_000;
    assert!(!gavel::signature::verify_webhook(
        "secret", timestamp, signature, body, now, 300
    ));
    assert!(!gavel::signature::verify_slack(
        "secret", timestamp, signature, body, now
    ));
    if let Some(t) = gavel::trace::TraceParent::parse(&text) {
        // What parses prints back as a version-00 header that parses to the same.
        assert_eq!(gavel::trace::TraceParent::parse(&t.header()), Some(t));
    }
});
