//! Sending one message to one channel: a signed webhook or a PagerDuty
//! Events API v2 event.

use super::{Channel, ChannelKind};
use crate::approval::NotificationKind;
use crate::engine::JobView;
use crate::store::OutboxRow;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

/// The signature header value of a webhook body sent at `timestamp`
/// (Unix seconds): `v1=` and the hex HMAC-SHA256, keyed with the channel's
/// secret, of `<timestamp>.<body>`.
pub fn sign_webhook(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
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
    let Ok(ts) = timestamp.parse::<i64>() else {
        return false;
    };
    if (now_secs - ts).abs() > tolerance_secs {
        return false;
    }
    let Some(hex_sig) = signature.strip_prefix("v1=") else {
        return false;
    };
    let Ok(given) = hex::decode(hex_sig) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(ts.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

fn link(page_url: &str, job_id: &str) -> Option<String> {
    (!page_url.is_empty()).then(|| format!("{}/jobs/{job_id}", page_url.trim_end_matches('/')))
}

/// The webhook body: the event, the job as it stands, links.
pub(super) fn webhook_body(page_url: &str, m: &OutboxRow, view: &JobView, now: i64) -> Value {
    json!({
        "id": m.id,
        "kind": m.kind.as_str(),
        "occurred_at": crate::clock::rfc3339(m.created_at),
        "sent_at": crate::clock::rfc3339(now),
        "job_version": m.job_version,
        "tenant": m.tenant,
        "state_after": m.body.get("state").cloned().unwrap_or(Value::Null),
        "actor": m.body.get("actor").cloned().unwrap_or(Value::Null),
        "job": crate::service::http::api::job_doc(view),
        "links": {
            "page": link(page_url, &m.job_id),
            "api": format!("/api/v1/jobs/{}", m.job_id),
        },
    })
}

/// The PagerDuty event for a message: trigger on escalation and override,
/// resolve once the job is resolved or expired; one incident per job.
pub(super) fn pagerduty_event(
    routing_key: &str,
    page_url: &str,
    m: &OutboxRow,
    view: &JobView,
) -> Option<Value> {
    let r = &view.record;
    let dedup_key = format!("gavel:{}", r.job_id);
    let (action, severity, summary) = match m.kind {
        NotificationKind::Escalated => (
            "trigger",
            "warning",
            format!(
                "gavel: approval overdue for {} ({})",
                r.evaluation.decision_summary.title, r.job_id
            ),
        ),
        NotificationKind::Overridden => (
            "trigger",
            "critical",
            format!(
                "gavel: break-glass override of {} by {}",
                r.job_id,
                r.override_by.as_deref().unwrap_or("someone")
            ),
        ),
        NotificationKind::Resolved | NotificationKind::Expired => {
            return Some(json!({
                "routing_key": routing_key,
                "event_action": "resolve",
                "dedup_key": dedup_key,
            }));
        }
        NotificationKind::Pending => return None,
    };
    let mut event = json!({
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": dedup_key,
        "payload": {
            "summary": summary,
            "source": "gavel",
            "severity": severity,
            "component": r.evaluation.primary_rule,
            "group": r.tenant,
            "class": m.kind.as_str(),
            "custom_details": {
                "job_id": r.job_id,
                "why": r.evaluation.decision_summary.why,
                "policy_snapshot": r.snapshot_id.as_str(),
                "job_hash": r.job_hash.as_str(),
                "idempotency_key": m.id,
            },
        },
    });
    if let Some(href) = link(page_url, &r.job_id) {
        event["links"] = json!([{ "href": href, "text": "Open in gavel" }]);
    }
    Some(event)
}

/// Sends one message; `Err` says why it did not arrive.
pub(super) async fn send(
    client: &reqwest::Client,
    channel: &Channel,
    secret: &str,
    page_url: &str,
    m: &OutboxRow,
    view: &JobView,
    now: i64,
) -> Result<(), String> {
    let (url, body, headers) = match channel.kind {
        ChannelKind::Webhook => {
            let body = serde_json::to_vec(&webhook_body(page_url, m, view, now))
                .map_err(|e| e.to_string())?;
            let ts = now.div_euclid(1000);
            let headers = vec![
                ("idempotency-key", m.id.clone()),
                ("x-gavel-event", m.kind.as_str().to_owned()),
                ("x-gavel-timestamp", ts.to_string()),
                ("x-gavel-signature", sign_webhook(secret, ts, &body)),
            ];
            (channel.url.clone(), body, headers)
        }
        ChannelKind::Pagerduty => {
            let Some(event) = pagerduty_event(secret, page_url, m, view) else {
                return Ok(());
            };
            let body = serde_json::to_vec(&event).map_err(|e| e.to_string())?;
            (format!("{}/v2/enqueue", channel.url), body, vec![])
        }
    };
    let mut req = client
        .post(url)
        .timeout(channel.timeout)
        .header("content-type", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let resp = req.send().await.map_err(|e| format!("send: {e}"))?;
    let status = resp.status();
    if status.is_success() {
        Ok(())
    } else {
        let text = resp.text().await.unwrap_or_default();
        let text: String = text.chars().take(200).collect();
        Err(format!("HTTP {}: {text}", status.as_u16()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_secret_body_and_time() {
        let body = br#"{"id":"j:2:pending"}"#;
        let sig = sign_webhook("s3cret", 1_800_000_000, body);
        assert!(verify_webhook(
            "s3cret",
            "1800000000",
            &sig,
            body,
            1_800_000_100,
            300
        ));
        assert!(!verify_webhook(
            "other",
            "1800000000",
            &sig,
            body,
            1_800_000_100,
            300
        ));
        assert!(!verify_webhook(
            "s3cret",
            "1800000000",
            &sig,
            b"{}",
            1_800_000_100,
            300
        ));
        assert!(!verify_webhook(
            "s3cret",
            "1800000001",
            &sig,
            body,
            1_800_000_100,
            300
        ));
        assert!(!verify_webhook(
            "s3cret",
            "1800000000",
            &sig,
            body,
            1_800_000_400,
            300
        ));
        assert!(!verify_webhook("s3cret", "x", &sig, body, 0, 300));
        assert!(!verify_webhook(
            "s3cret",
            "1800000000",
            "v1=zz",
            body,
            1_800_000_000,
            300
        ));
        // An HMAC-SHA256 computed independently (Python's hmac module):
        // hmac.new(b"key", b"0.", hashlib.sha256).hexdigest()
        assert_eq!(
            sign_webhook("key", 0, b""),
            "v1=85841b4efc3cd7776c3c8f9b7cca9e281c550e5d19889d78e9e669c6337f000d"
        );
    }
}
