//! `POST /slack/interactions`: the Slack app's buttons and modals. A
//! request counts only when Slack's v0 signature verifies, its timestamp
//! is within five minutes, and its signature was never seen before (on
//! any replica). The Slack user id maps to a gavel identity through the
//! identity's `slack_user_ids`, and the approval runs the same core checks
//! as every door, with channel `slack` (a gate may refuse it).
//!
//! A button opens a modal asking for the reason (prefilled for an
//! approval, required for a rejection); submitting the modal acts. A button
//! on a job that is no longer pending opens a modal saying how the job
//! stands, and acts on nothing. Messages themselves are only ever posted
//! and updated through the outbox.

use super::State;
use crate::engine::Approve;
use crate::notify::{SlackApp, verify_slack};
use crate::policy::Channel;
use crate::refusal::Refusal;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

/// How long a seen signature is remembered: beyond the 5-minute window
/// a replay is refused by its timestamp anyway.
const REMEMBER_MS: i64 = 10 * 60 * 1000;

fn refuse(status: StatusCode, why: &str) -> Response {
    (
        status,
        Json(json!({"error": {"reason": "UNAUTHENTICATED", "message": why}})),
    )
        .into_response()
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

pub(super) async fn interactions(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(app) = state.slack.as_ref() else {
        return refuse(StatusCode::NOT_FOUND, "no Slack app is configured");
    };
    let now = state.engine.now();
    let ts = header(&headers, "x-slack-request-timestamp");
    let sig = header(&headers, "x-slack-signature");
    if !verify_slack(&app.signing_secret, ts, sig, &body, now.div_euclid(1000)) {
        tracing::warn!("Slack interaction with a bad signature or timestamp refused");
        return refuse(
            StatusCode::UNAUTHORIZED,
            "the Slack signature does not verify or the timestamp is outside 5 minutes",
        );
    }
    match state
        .engine
        .store()
        .first_sight(sig, now, now - REMEMBER_MS)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!("replayed Slack interaction refused");
            return refuse(StatusCode::UNAUTHORIZED, "this request was already handled");
        }
        Err(_) => {
            return (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable",
            )
                .into_response();
        }
    }
    let payload: Option<Value> = serde_urlencoded::from_bytes::<Vec<(String, String)>>(&body)
        .ok()
        .and_then(|f| f.into_iter().find(|(k, _)| k == "payload"))
        .and_then(|(_, p)| serde_json::from_str(&p).ok());
    let Some(p) = payload else {
        return (StatusCode::BAD_REQUEST, "no payload").into_response();
    };
    let user = p["user"]["id"].as_str().unwrap_or("");
    let who = state.engine.directory().by_slack_user(user).cloned();
    match p["type"].as_str() {
        Some("block_actions") => {
            let trigger = p["trigger_id"].as_str().unwrap_or("");
            let action = &p["actions"][0];
            let view = match &who {
                None => info_modal(
                    "Not linked",
                    &format!(
                        "Your Slack account ({user}) is not linked to a gavel identity; ask an operator to add it to `slack_user_ids`."
                    ),
                ),
                Some(who) => button_modal(&state, who, action).await,
            };
            open_view(&state, app, trigger, view).await
        }
        Some("view_submission") => {
            let Some(who) = who else {
                return modal_error(&format!(
                    "Slack user {user} is not linked to a gavel identity"
                ));
            };
            // The same per-identity rate as every other door.
            crate::observe::identity(&who.name);
            if let Err(r) = state.engine.admit(&who) {
                return modal_error(&r.message);
            }
            let callback = p["view"]["callback_id"].as_str().unwrap_or("");
            let meta = p["view"]["private_metadata"].as_str().unwrap_or("");
            let reason = p["view"]["state"]["values"]["reason"]["reason"]["value"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            let mut parts = meta.splitn(3, '|');
            let (job_id, hash, snapshot) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            let result = match callback {
                "gavel_approve" => state
                    .engine
                    .approve(
                        &who,
                        job_id,
                        Approve {
                            reason,
                            note: String::new(),
                            channel: Channel::Slack,
                            expected_job_hash: Some(hash.to_owned()),
                            expected_snapshot: Some(snapshot.to_owned()),
                        },
                    )
                    .await
                    .map(drop),
                "gavel_reject" => state
                    .engine
                    .reject(&who, job_id, &reason, "rejected in Slack")
                    .await
                    .map(drop),
                _ => return Json(json!({})).into_response(),
            };
            match result {
                Ok(()) => {
                    tracing::info!(job_id, by = %who.name, callback, "decided in Slack");
                    Json(json!({"response_action": "clear"})).into_response()
                }
                Err(r) => modal_error(&refusal_text(&r)),
            }
        }
        _ => Json(json!({})).into_response(),
    }
}

fn refusal_text(r: &Refusal) -> String {
    format!("{}: {}", r.reason.as_str(), r.message)
}

/// A modal submission refused: Slack shows the message under the field.
fn modal_error(message: &str) -> Response {
    Json(json!({"response_action": "errors", "errors": {"reason": message}})).into_response()
}

fn info_modal(title: &str, text: &str) -> Value {
    json!({
        "type": "modal",
        "title": {"type": "plain_text", "text": title.chars().take(24).collect::<String>()},
        "close": {"type": "plain_text", "text": "Close"},
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    })
}

/// The modal a button opens: the reason form, or how the job stands.
async fn button_modal(state: &State, who: &crate::identity::Identity, action: &Value) -> Value {
    let approve = action["action_id"] == "gavel_approve";
    let value = action["value"].as_str().unwrap_or("");
    let job_id = value.split('|').next().unwrap_or("");
    let view = match state.engine.get_job(who, job_id).await {
        Ok(v) => v,
        Err(r) => return info_modal("Refused", &refusal_text(&r)),
    };
    if view.state != crate::approval::JobState::Pending {
        let r = &view.record;
        let by = r
            .resolved_by
            .as_deref()
            .map(|b| format!(" by {b}"))
            .unwrap_or_default();
        return info_modal(
            "Already decided",
            &format!(
                "Job `{job_id}` is {}{by}. Nothing was changed.",
                view.state.as_str()
            ),
        );
    }
    let mut input = json!({"type": "plain_text_input", "action_id": "reason", "multiline": true});
    if approve {
        input["initial_value"] = json!("Reviewed in Slack: matches the request");
    }
    json!({
        "type": "modal",
        "callback_id": if approve { "gavel_approve" } else { "gavel_reject" },
        "private_metadata": value,
        "title": {"type": "plain_text", "text": if approve { "Approve job" } else { "Reject job" }},
        "submit": {"type": "plain_text", "text": if approve { "Approve" } else { "Reject" }},
        "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": format!(
                "*{}*\njob `{}` · hash `{}`",
                view.record.evaluation.decision_summary.title,
                job_id,
                view.record.job_hash.as_str().chars().take(12).collect::<String>(),
            )}},
            {"type": "input", "block_id": "reason", "label": {"type": "plain_text", "text": "Reason"}, "element": input},
        ],
    })
}

async fn open_view(state: &State, app: &SlackApp, trigger: &str, view: Value) -> Response {
    let body = json!({"trigger_id": trigger, "view": view});
    match crate::notify::slack_call(
        &state.client,
        &app.api_url,
        &app.bot_token,
        "views.open",
        &body,
    )
    .await
    {
        Ok(_) => StatusCode::OK.into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "views.open failed");
            StatusCode::OK.into_response()
        }
    }
}
