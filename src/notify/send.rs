//! Sending one message to one channel: a signed webhook or a PagerDuty
//! Events API v2 event.

use super::{Channel, ChannelKind};
use crate::approval::NotificationKind;
use crate::engine::JobView;
pub use crate::signature::{sign_slack, sign_webhook, verify_slack, verify_webhook};
use crate::store::OutboxRow;
use serde_json::{Value, json};

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
        // On an escalation ladder's rung: which one, and whom it notifies.
        "step": m.body.get("step").cloned().unwrap_or(Value::Null),
        "notify": m.body.get("notify").cloned().unwrap_or(Value::Null),
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
        ChannelKind::Slack => return Err("Slack messages are sent by `slack`".into()),
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

// ------------------------------------------------------------ Slack

fn short(s: &str) -> String {
    let tail = s.rsplit(':').next().unwrap_or(s);
    tail.chars().take(12).collect()
}

/// Slack's mrkdwn needs `&`, `<` and `>` escaped.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The message for a job: title, why, target, risk, snapshot and hash,
/// the proposal, who approved so far; Approve / Reject buttons while it
/// is pending; amber for one approval, red for two or more, grey once
/// resolved. The buttons carry the job id, hash and snapshot shown, so an
/// approval lands only on that content.
pub fn slack_blocks(view: &JobView, page_url: &str) -> Value {
    let r = &view.record;
    let e = &r.evaluation;
    let content: Value = serde_json::from_str(&r.canonical_job).unwrap_or(Value::Null);
    let proposal = &content["proposal"];
    let people: u32 = e.gates.iter().map(|g| g.approvers).sum();
    let pending = view.state == crate::approval::JobState::Pending;
    let color = if !pending {
        "#8e8e93"
    } else if people >= 2 {
        "#d0021b"
    } else {
        "#f5a623"
    };
    let tags: Vec<&str> = content["risk_tags"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let approved: Vec<String> = r.approvals.iter().map(|a| a.approver.clone()).collect();
    let text_or = |v: &Value, none: &str| {
        v.as_str()
            .filter(|s| !s.is_empty())
            .map(esc)
            .unwrap_or_else(|| none.to_owned())
    };
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": e.decision_summary.title.chars().take(150).collect::<String>()}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": format!(
            "*Why:* {}\n*Target:* `{}`\n*Risk:* {} · {}\n*Next:* {}",
            esc(&e.decision_summary.why),
            esc(content["target"].as_str().unwrap_or("")),
            if people >= 2 { "dual approval" } else { "one approval" },
            if tags.is_empty() { "no risk tags".to_owned() } else { esc(&tags.join(", ")) },
            esc(&e.decision_summary.next_effect),
        )}}),
        json!({"type": "section", "fields": [
            {"type": "mrkdwn", "text": format!("*Snapshot*\n`{}`", short(r.snapshot_id.as_str()))},
            {"type": "mrkdwn", "text": format!("*Job hash*\n`{}`", short(r.job_hash.as_str()))},
            {"type": "mrkdwn", "text": format!("*Blast radius*\n{}", text_or(&proposal["blast_radius"], "not stated"))},
            {"type": "mrkdwn", "text": format!("*Reversible*\n{}", match proposal["reversible"].as_bool() { Some(true) => "yes", Some(false) => "no", None => "not stated" })},
            {"type": "mrkdwn", "text": format!("*Estimated cost*\n{}", proposal["estimated_cost_usd"].as_f64().map_or("not stated".to_owned(), |c| format!("${c}")))},
            {"type": "mrkdwn", "text": format!("*Approved by*\n{}", if approved.is_empty() { "nobody yet".to_owned() } else { esc(&approved.join(", ")) })},
            {"type": "mrkdwn", "text": format!("*State*\n{}", view.state.as_str().to_ascii_uppercase())},
        ]}),
    ];
    let mut context = format!("job `{}` · rule `{}`", esc(&r.job_id), esc(&e.primary_rule));
    if let Some(by) = &r.resolved_by {
        context.push_str(&format!(
            " · {} by {}",
            esc(r.resolution.as_deref().unwrap_or("resolved")),
            esc(by)
        ));
    }
    if !page_url.is_empty() {
        context.push_str(&format!(
            " · <{}/jobs/{}|open in gavel>",
            page_url.trim_end_matches('/'),
            r.job_id
        ));
    }
    blocks.push(json!({"type": "context", "elements": [{"type": "mrkdwn", "text": context}]}));
    if pending {
        let value = format!(
            "{}|{}|{}",
            r.job_id,
            r.job_hash.as_str(),
            r.snapshot_id.as_str()
        );
        blocks.push(json!({"type": "actions", "block_id": "gavel", "elements": [
            {"type": "button", "action_id": "gavel_approve", "style": "primary", "text": {"type": "plain_text", "text": "Approve"}, "value": value},
            {"type": "button", "action_id": "gavel_reject", "style": "danger", "text": {"type": "plain_text", "text": "Reject"}, "value": value},
        ]}));
    }
    json!({
        "text": format!("{}: {}", e.decision_summary.title, view.state.as_str()),
        "attachments": [{"color": color, "blocks": blocks}],
    })
}

/// Calls a Slack Web API method; Slack answers 200 with `ok: false` for
/// most failures, which is an error here too.
pub async fn slack_call(
    client: &reqwest::Client,
    api_url: &str,
    token: &str,
    method: &str,
    body: &Value,
) -> Result<Value, String> {
    let resp = client
        .post(format!("{api_url}/{method}"))
        .bearer_auth(token)
        .timeout(std::time::Duration::from_secs(10))
        .json(body)
        .send()
        .await
        .map_err(|e| format!("{method}: {e}"))?;
    let status = resp.status();
    let v: Value = resp
        .json()
        .await
        .map_err(|e| format!("{method}: HTTP {}: {e}", status.as_u16()))?;
    if v["ok"] == true {
        Ok(v)
    } else {
        Err(format!(
            "{method}: {}",
            v["error"].as_str().unwrap_or("not ok")
        ))
    }
}

/// Posts a job's message, or updates the one it already has.
pub(super) async fn slack(
    client: &reqwest::Client,
    store: &dyn crate::store::Store,
    channel: &Channel,
    slack_channel: &str,
    page_url: &str,
    m: &OutboxRow,
    view: &JobView,
) -> Result<(), String> {
    let mut body = slack_blocks(view, page_url);
    let existing = store
        .slack_message(&m.job_id, &channel.name)
        .await
        .map_err(|e| e.to_string())?;
    match existing {
        Some((posted_in, ts)) => {
            body["channel"] = json!(posted_in);
            body["ts"] = json!(ts);
            slack_call(client, &channel.url, &channel.secret, "chat.update", &body).await?;
        }
        None => {
            body["channel"] = json!(slack_channel);
            let v = slack_call(
                client,
                &channel.url,
                &channel.secret,
                "chat.postMessage",
                &body,
            )
            .await?;
            let ts = v["ts"].as_str().ok_or("chat.postMessage: no ts")?;
            let posted_in = v["channel"].as_str().unwrap_or(slack_channel);
            store
                .save_slack_message(&m.job_id, &channel.name, posted_in, ts)
                .await
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(())
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

    #[test]
    fn slack_signatures_follow_slacks_v0_scheme() {
        // Computed independently with Python's hmac module:
        // hmac.new(b"sec", b"v0:1531420618:payload=%7B%7D", hashlib.sha256).hexdigest()
        let body = b"payload=%7B%7D";
        let want = "v0=2ce4e6801ec2cb2731419f4f8e4bdc6b5086bce973251793be21706e8cb1b222";
        assert_eq!(sign_slack("sec", "1531420618", body), want);
        assert!(verify_slack(
            "sec",
            "1531420618",
            want,
            body,
            1531420618 + 299
        ));
        assert!(!verify_slack(
            "sec",
            "1531420618",
            want,
            body,
            1531420618 + 301
        ));
        assert!(!verify_slack("other", "1531420618", want, body, 1531420618));
        assert!(!verify_slack("sec", "1531420619", want, body, 1531420618));
        assert!(!verify_slack(
            "sec",
            "1531420618",
            want,
            b"payload=%7B%7Dx",
            1531420618
        ));
        assert!(!verify_slack(
            "sec",
            "1531420618",
            "v1=00",
            body,
            1531420618
        ));
    }
}
