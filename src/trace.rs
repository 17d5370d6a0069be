//! Distributed tracing, the pure part: the W3C `traceparent` header
//! (Trace Context, level 1), the spans gavel records for the requests it
//! serves, the head-sampling rule for traces gavel starts itself, and the
//! OTLP/HTTP JSON body that carries spans to a collector. Sockets and the
//! export queue live in `service::observe`.

use serde_json::{Value, json};

/// A trace id: 16 bytes, never all zero.
pub type TraceId = [u8; 16];
/// A span id: 8 bytes, never all zero.
pub type SpanId = [u8; 8];

/// A parsed `traceparent`: the caller's trace, its span (our parent), and
/// whether the caller records this trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub sampled: bool,
}

fn hex_exact<const N: usize>(s: &str) -> Option<[u8; N]> {
    // Lowercase only, as the specification requires.
    if s.len() != 2 * N
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).ok()?;
    Some(out)
}

impl TraceParent {
    /// Parses a `traceparent` value. Anything malformed, an all-zero id,
    /// or the forbidden version `ff` gives `None`: the request then starts
    /// a trace of its own, as the specification asks. A later version is
    /// read for its first four fields.
    pub fn parse(value: &str) -> Option<TraceParent> {
        let value = value.trim_matches([' ', '\t']);
        let mut parts = value.split('-');
        let version: [u8; 1] = hex_exact(parts.next()?)?;
        let trace_id: TraceId = hex_exact(parts.next()?)?;
        let span_id: SpanId = hex_exact(parts.next()?)?;
        let flags: [u8; 1] = hex_exact(parts.next()?)?;
        let rest = parts.next();
        match version[0] {
            0xff => return None,
            // Version 00 has exactly four fields.
            0 if rest.is_some() => return None,
            _ => {}
        }
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceParent {
            trace_id,
            span_id,
            sampled: flags[0] & 1 == 1,
        })
    }

    /// The header value, version 00.
    pub fn header(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex::encode(self.trace_id),
            hex::encode(self.span_id),
            u8::from(self.sampled)
        )
    }
}

/// Whether a trace gavel starts itself (the caller sent no usable
/// `traceparent`) is recorded: the trace id's last 8 bytes, read as a
/// number, below `ratio` of their range. Deterministic in the id, so every
/// replica agrees on a trace.
pub fn sampled_root(trace_id: &TraceId, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio.is_nan() || ratio <= 0.0 {
        return false;
    }
    let mut low = [0u8; 8];
    low.copy_from_slice(&trace_id[8..]);
    let x = u64::from_be_bytes(low);
    (x as f64) < ratio * (u64::MAX as f64)
}

/// One attribute value.
#[derive(Debug, Clone, PartialEq)]
pub enum Attr {
    Str(String),
    Int(i64),
}

/// One finished span.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The caller's span, when the trace came with the request.
    pub parent: Option<SpanId>,
    pub name: String,
    pub start_unix_nanos: u64,
    pub end_unix_nanos: u64,
    pub attributes: Vec<(&'static str, Attr)>,
    /// Set when the request failed on the server's side (an error status
    /// in OpenTelemetry's sense, not a refusal of the caller's request).
    pub error: Option<String>,
}

/// OTLP's `SPAN_KIND_SERVER`: every span gavel records serves a request.
const SPAN_KIND_SERVER: u8 = 2;
/// OTLP's `STATUS_CODE_ERROR`.
const STATUS_CODE_ERROR: u8 = 2;

fn attributes(list: &[(&str, Attr)]) -> Vec<Value> {
    list.iter()
        .map(|(key, value)| {
            let value = match value {
                Attr::Str(s) => json!({ "stringValue": s }),
                // 64-bit integers travel as decimal strings in OTLP JSON.
                Attr::Int(i) => json!({ "intValue": i.to_string() }),
            };
            json!({ "key": key, "value": value })
        })
        .collect()
}

/// The body of one OTLP/HTTP JSON export (`ExportTraceServiceRequest`):
/// one resource (the service and replica) with one scope holding the
/// spans. Ids are lowercase hex, times decimal strings, enums numbers, as
/// the OTLP JSON encoding specifies.
pub fn export_body(service_name: &str, replica: &str, spans: &[Span]) -> Value {
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| {
            let mut span = json!({
                "traceId": hex::encode(s.trace_id),
                "spanId": hex::encode(s.span_id),
                "name": s.name,
                "kind": SPAN_KIND_SERVER,
                "startTimeUnixNano": s.start_unix_nanos.to_string(),
                "endTimeUnixNano": s.end_unix_nanos.to_string(),
                "attributes": attributes(&s.attributes),
            });
            if let Some(p) = s.parent {
                span["parentSpanId"] = json!(hex::encode(p));
            }
            if let Some(message) = &s.error {
                span["status"] = json!({ "code": STATUS_CODE_ERROR, "message": message });
            }
            span
        })
        .collect();
    json!({
        "resourceSpans": [{
            "resource": {
                "attributes": attributes(&[
                    ("service.name", Attr::Str(service_name.to_owned())),
                    ("service.instance.id", Attr::Str(replica.to_owned())),
                    ("service.version", Attr::Str(env!("CARGO_PKG_VERSION").to_owned())),
                ]),
            },
            "scopeSpans": [{
                "scope": { "name": "gavel", "version": env!("CARGO_PKG_VERSION") },
                "spans": spans,
            }],
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_round_trips() {
        let t = TraceParent::parse(GOOD).unwrap();
        assert_eq!(hex::encode(t.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex::encode(t.span_id), "00f067aa0ba902b7");
        assert!(t.sampled);
        assert_eq!(t.header(), GOOD);
        let unsampled = TraceParent::parse(&GOOD.replace("-01", "-00")).unwrap();
        assert!(!unsampled.sampled);
        // Other flag bits do not make a trace sampled.
        assert!(
            !TraceParent::parse(&GOOD.replace("-01", "-02"))
                .unwrap()
                .sampled
        );
    }

    #[test]
    fn malformed_traceparents_are_ignored() {
        for bad in [
            "",
            "00",
            &GOOD.to_uppercase(),
            &GOOD.replace("4bf92f3577b34da6a3ce929d0e0e4736", &"0".repeat(32)),
            &GOOD.replace("00f067aa0ba902b7", &"0".repeat(16)),
            &GOOD.replacen("00-", "ff-", 1),
            &format!("{GOOD}-extra"),
            &GOOD.replace("-01", "-1"),
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
        // A later version with more fields is read for the ones we know.
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-next";
        assert!(TraceParent::parse(later).is_some());
    }

    #[test]
    fn root_sampling_follows_the_ratio_and_the_id() {
        let id = |low: u64| {
            let mut t = [1u8; 16];
            t[8..].copy_from_slice(&low.to_be_bytes());
            t
        };
        assert!(sampled_root(&id(u64::MAX), 1.0));
        assert!(!sampled_root(&id(0), 0.0));
        assert!(sampled_root(&id(u64::MAX / 4), 0.5));
        assert!(!sampled_root(&id(u64::MAX / 4 * 3), 0.5));
        let kept = (0..1000u64)
            .filter(|i| sampled_root(&id(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)), 0.25))
            .count();
        assert!((200..300).contains(&kept), "{kept}");
    }

    #[test]
    fn the_export_body_uses_the_otlp_json_encoding() {
        let span = Span {
            trace_id: [0xab; 16],
            span_id: [0x01; 8],
            parent: Some([0x02; 8]),
            name: "gavel.v1.DecisionService/Decide".into(),
            start_unix_nanos: 1_800_000_000_000_000_000,
            end_unix_nanos: 1_800_000_000_000_500_000,
            attributes: vec![
                ("gavel.job_id", Attr::Str("j-1".into())),
                ("rpc.grpc.status_code", Attr::Int(0)),
            ],
            error: Some("INTERNAL".into()),
        };
        let body = export_body("gavel", "main", &[span]);
        let rs = &body["resourceSpans"][0];
        assert_eq!(rs["resource"]["attributes"][0]["key"], "service.name");
        let s = &rs["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], "ab".repeat(16));
        assert_eq!(s["spanId"], "01".repeat(8));
        assert_eq!(s["parentSpanId"], "02".repeat(8));
        assert_eq!(s["kind"], 2);
        assert_eq!(s["startTimeUnixNano"], "1800000000000000000");
        assert_eq!(s["attributes"][1]["value"]["intValue"], "0");
        assert_eq!(s["status"]["code"], 2);
    }
}
