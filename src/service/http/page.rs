//! The approver page at `/ui/`: server-rendered HTML (maud), a few lines
//! of plain JavaScript for auto-refresh, no framework.
//!
//! Sign-in takes a bearer token once and makes a server-side session: the
//! browser holds only a random secret in an `HttpOnly; SameSite=Strict`
//! cookie (also `Secure` behind TLS), the store keeps its sha256, and every
//! form carries a CSRF token derived from the secret. Every state-changing
//! request is a POST that must carry that token and, when the browser
//! sends an `Origin`, come from this host. Refusals render as a readable
//! message with the reason's name, never a stack trace.

use super::State;
use super::api::{self, JobDoc};
use crate::approval::JobState;
use crate::engine::{ApprovalQuery, Approve, JobView, ReviewStats, Session, csrf_matches};
use crate::policy::Channel;
use crate::refusal::{Reason, Refusal};
use crate::service::status::http_status;
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;
use std::collections::HashMap;

const COOKIE: &str = "gavel_session";
const LOGIN_COOKIE: &str = "gavel_login";
/// The OIDC flow in progress. `SameSite=Lax`: the IdP's redirect back is
/// a cross-site navigation, on which a `Strict` cookie would not be sent.
const OIDC_COOKIE: &str = "gavel_oidc";
const FORM_LIMIT: usize = 64 * 1024;
/// Jobs created within this window count for a person's statistics.
const STATS_WINDOW_MS: i64 = 30 * 24 * 3600 * 1000;

pub(super) fn router() -> Router<State> {
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(queue))
        .route("/ui/login", get(login_form).post(login))
        .route("/ui/oidc/start", get(oidc_start))
        .route("/ui/oidc/callback", get(oidc_callback))
        .route("/ui/logout", post(logout))
        .route("/ui/jobs/{job_id}", get(job_page))
        .route("/ui/jobs/{job_id}/approve", post(approve))
        .route("/ui/jobs/{job_id}/reject", post(reject))
        .route("/ui/jobs/{job_id}/acknowledge", post(acknowledge))
        .route("/ui/history", get(history))
        .route("/ui/overrides", get(overrides))
        .route("/ui/me", get(me))
        .route("/ui/outbox", get(outbox))
        .route("/ui/stats", get(stats))
        .route("/ui/policy", get(policy))
        .route("/ui/static/app.css", get(css))
        .route("/ui/static/app.js", get(js))
}

// ------------------------------------------------------------ plumbing

/// A rendered page (or a redirect), with the headers every page carries.
struct Page(Response);

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        let mut r = self.0;
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
            ),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        r
    }
}

fn html_page(status: StatusCode, markup: Markup) -> Page {
    Page(
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            markup.into_string(),
        )
            .into_response(),
    )
}

fn redirect(to: &str) -> Page {
    Page(Redirect::to(to).into_response())
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

fn set_cookie(state: &State, name: &str, value: &str, max_age_secs: i64) -> HeaderValue {
    let secure = if state.secure_cookies { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The signed-in session, or the sign-in page.
async fn session(state: &State, headers: &HeaderMap) -> Result<Session, Page> {
    let Some(secret) = cookie(headers, COOKIE) else {
        return Err(redirect("/ui/login"));
    };
    let Ok(s) = state.engine.session(&secret).await else {
        return Err(redirect("/ui/login"));
    };
    crate::observe::identity(&s.identity.name);
    // The page counts against the person's request rate like the API.
    if let Err(r) = state.engine.admit(&s.identity) {
        return Err(refusal_page(Some(&s), &r));
    }
    Ok(s)
}

/// A refusal as a page: the reason's name, the message, a way back.
fn refusal_page(session: Option<&Session>, r: &Refusal) -> Page {
    crate::observe::refused(r.reason.as_str());
    let status = StatusCode::from_u16(http_status(r.reason)).unwrap_or(StatusCode::BAD_REQUEST);
    html_page(
        status,
        layout(
            "Refused",
            session,
            html! {
                (banner(r))
                p { a href="/ui/" { "Back to the queue" } }
            },
        ),
    )
}

fn banner(r: &Refusal) -> Markup {
    html! {
        div.refusal role="alert" {
            strong { (r.reason.as_str()) } ": " (r.message)
            @if let Some(f) = &r.field { " (" (f) ")" }
        }
    }
}

/// A submitted form: urlencoded, within the limit, from this origin, and
/// carrying this session's CSRF token.
async fn form<T: serde::de::DeserializeOwned>(
    req: Request,
    session: Option<&Session>,
) -> Result<T, Refusal> {
    let headers = req.headers().clone();
    let essence = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence != "application/x-www-form-urlencoded" {
        return Err(Refusal::field(
            Reason::InvalidArgument,
            "content-type",
            "forms are sent as application/x-www-form-urlencoded",
        ));
    }
    same_origin(&headers)?;
    let bytes = axum::body::to_bytes(req.into_body(), FORM_LIMIT)
        .await
        .map_err(|_| Refusal::field(Reason::InvalidArgument, "body", "the form is too large"))?;
    let fields: HashMap<String, String> = serde_urlencoded::from_bytes(&bytes)
        .map_err(|e| Refusal::field(Reason::InvalidArgument, "body", e.to_string()))?;
    if let Some(s) = session {
        let token = fields.get("csrf").map(String::as_str).unwrap_or("");
        if !csrf_matches(&s.secret, token) {
            return Err(Refusal::field(
                Reason::PermissionDenied,
                "csrf",
                "this form did not come from a page of this session; reload the page and try again",
            ));
        }
    }
    serde_urlencoded::from_bytes(&bytes)
        .map_err(|e| Refusal::field(Reason::InvalidArgument, "body", e.to_string()))
}

/// A browser that names the page's origin must name this host.
fn same_origin(headers: &HeaderMap) -> Result<(), Refusal> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return Ok(());
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin_host = origin.split_once("://").map_or("", |(_, h)| h);
    if origin_host.eq_ignore_ascii_case(host) {
        Ok(())
    } else {
        Err(Refusal::field(
            Reason::PermissionDenied,
            "origin",
            format!("a form from `{origin}` may not act on this server"),
        ))
    }
}

fn layout(title: &str, session: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · gavel" }
                link rel="stylesheet" href="/ui/static/app.css";
                script src="/ui/static/app.js" defer {}
            }
            body {
                header {
                    a.brand href="/ui/" { "gavel" }
                    @if let Some(s) = session {
                        nav {
                            a href="/ui/" { "Queue" }
                            a href="/ui/history" { "History" }
                            a href="/ui/overrides" { "Break-glass" }
                            a href="/ui/me" { "My stats" }
                            @if s.identity.has(crate::identity::OPERATOR) || s.identity.has(crate::identity::AUDITOR) {
                                a href="/ui/outbox" { "Outbox" }
                                a href="/ui/stats" { "Statistics" }
                            }
                        }
                        form.signout method="post" action="/ui/logout" {
                            input type="hidden" name="csrf" value=(s.csrf());
                            span.who { (s.identity.name) }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

/// "12m", "1h 05m", "2d 3h"; negative spans read "overdue".
fn span(ms: i64) -> String {
    if ms <= 0 {
        return "overdue".into();
    }
    let m = ms / 60_000;
    match m {
        0 => format!("{}s", ms / 1000),
        1..=59 => format!("{m}m"),
        60..=1439 => format!("{}h {:02}m", m / 60, m % 60),
        _ => format!("{}d {}h", m / 1440, m % 1440 / 60),
    }
}

/// How much is at stake: `dual` when two or more people must approve.
fn stakes(v: &JobView) -> (&'static str, &'static str) {
    let people: u32 = v.record.evaluation.gates.iter().map(|g| g.approvers).sum();
    if people >= 2 {
        ("dual", "two or more approvals")
    } else {
        ("single", "one approval")
    }
}

fn job_row(v: &JobView) -> Markup {
    let r = &v.record;
    let (class, label) = stakes(v);
    let now = v.at;
    html! {
        li.job.(class) {
            a href={ "/ui/jobs/" (r.job_id) } {
                span.title { (r.evaluation.decision_summary.title) }
                span.meta {
                    span.badge.(class) { (label) }
                    @if r.overridden { span.badge.breakglass { "break-glass" } }
                    " " (r.job_id) " · " (r.requester) " · " (v.state.as_str())
                }
                span.times {
                    @if v.state == JobState::Pending {
                        @if let Some(t) = r.escalate_at.filter(|_| !r.escalated) {
                            "escalates in " (span(t - now)) " · "
                        }
                        @if r.escalated { "escalated · " }
                        @if let Some(t) = r.expires_at { "expires in " (span(t - now)) }
                    } @else {
                        @if let Some(by) = &r.resolved_by { (r.resolution.as_deref().unwrap_or("")) " by " (by) }
                    }
                }
            }
        }
    }
}

// ------------------------------------------------------------ sign-in

async fn login_form(AxState(state): AxState<State>) -> Page {
    let nonce = match crate::identity::new_token() {
        Ok(t) => t.trim_start_matches("gvl_").to_owned(),
        Err(_) => {
            return refusal_page(
                None,
                &Refusal::new(Reason::Unavailable, "no randomness for a sign-in"),
            );
        }
    };
    let mut page = html_page(
        StatusCode::OK,
        layout(
            "Sign in",
            None,
            html! {
                p { "Paste your gavel token. The page keeps a session; the token is not stored in the browser." }
                @if let Some(o) = &state.oidc {
                    p { a.button href="/ui/oidc/start" { (o.config.label) } }
                    p { "Or paste a token:" }
                }
                form.card method="post" action="/ui/login" {
                    input type="hidden" name="login" value=(nonce);
                    label { "Token" input type="password" name="token" autocomplete="off" required; }
                    button type="submit" { "Sign in" }
                }
            },
        ),
    );
    page.0.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, LOGIN_COOKIE, &nonce, 600),
    );
    page
}

#[derive(Deserialize)]
struct LoginForm {
    token: String,
    #[serde(default)]
    login: String,
}

async fn login(AxState(state): AxState<State>, req: Request) -> Page {
    let nonce = cookie(req.headers(), LOGIN_COOKIE).unwrap_or_default();
    let f: LoginForm = match form(req, None).await {
        Ok(f) => f,
        Err(r) => return refusal_page(None, &r),
    };
    // Double-submit check: the form came from the sign-in page this browser loaded.
    if nonce.is_empty() || !crate::identity::secrets_equal(&nonce, &f.login) {
        return refusal_page(
            None,
            &Refusal::field(
                Reason::PermissionDenied,
                "login",
                "the sign-in form has expired; open /ui/login again",
            ),
        );
    }
    match state.engine.sign_in(&f.token).await {
        Ok(s) => {
            let mut page = redirect("/ui/");
            let ttl = (s.expires_at - state.engine.now()) / 1000;
            let h = page.0.headers_mut();
            h.append(
                header::SET_COOKIE,
                set_cookie(&state, COOKIE, &s.secret, ttl),
            );
            h.append(header::SET_COOKIE, set_cookie(&state, LOGIN_COOKIE, "", 0));
            page
        }
        Err(r) => html_page(
            StatusCode::UNAUTHORIZED,
            layout(
                "Sign in",
                None,
                html! {
                    (banner(&r))
                    p { a href="/ui/login" { "Try again" } }
                },
            ),
        ),
    }
}

fn oidc_cookie(state: &State, value: &str, max_age_secs: i64) -> HeaderValue {
    let secure = if state.secure_cookies { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{OIDC_COOKIE}={value}; Path=/ui/oidc; HttpOnly; SameSite=Lax; Max-Age={max_age_secs}{secure}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn not_configured() -> Refusal {
    Refusal::new(
        Reason::NotFound,
        "sign-in through an identity provider is not configured",
    )
}

/// The sign-in button: a fresh flow in a cookie, then off to the IdP.
async fn oidc_start(AxState(state): AxState<State>) -> Page {
    let Some(o) = &state.oidc else {
        return refusal_page(None, &not_configured());
    };
    let flow = match crate::oidc::Flow::start(state.engine.now()) {
        Ok(f) => f,
        Err(e) => {
            return refusal_page(None, &Refusal::new(Reason::Unavailable, e.to_string()));
        }
    };
    let mut page = Page(Redirect::to(&o.authorization_url(&flow)).into_response());
    page.0.headers_mut().append(
        header::SET_COOKIE,
        oidc_cookie(&state, &flow.to_cookie(), crate::oidc::FLOW_TTL_MS / 1000),
    );
    page
}

#[derive(Deserialize)]
struct Callback {
    #[serde(default)]
    code: String,
    #[serde(default)]
    state: String,
    #[serde(default)]
    error: String,
}

/// The IdP sends the browser back here with a code (or an error). The
/// flow cookie is used once, whatever happens.
async fn oidc_callback(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    args: Result<Query<Callback>, QueryRejection>,
) -> Page {
    let mut page = oidc_finish(&state, &headers, args).await;
    page.0
        .headers_mut()
        .append(header::SET_COOKIE, oidc_cookie(&state, "", 0));
    page
}

async fn oidc_finish(
    state: &State,
    headers: &HeaderMap,
    args: Result<Query<Callback>, QueryRejection>,
) -> Page {
    let Some(o) = &state.oidc else {
        return refusal_page(None, &not_configured());
    };
    let refused = |m: String| {
        html_page(
            StatusCode::UNAUTHORIZED,
            layout(
                "Sign in",
                None,
                html! {
                    (banner(&Refusal::new(Reason::Unauthenticated, m)))
                    p { a href="/ui/login" { "Try again" } }
                },
            ),
        )
    };
    let Ok(Query(cb)) = args else {
        return refused("the identity provider's answer does not parse".into());
    };
    let Some(flow) = cookie(headers, OIDC_COOKIE).and_then(|v| crate::oidc::Flow::from_cookie(&v))
    else {
        return refused("no sign-in is in progress in this browser; start again".into());
    };
    if let Err(m) = flow.accepts(&cb.state, state.engine.now()) {
        return refused(m.into());
    }
    if !cb.error.is_empty() {
        return refused(format!("the identity provider refused: {}", cb.error));
    }
    if cb.code.is_empty() {
        return refused("the identity provider sent no code".into());
    }
    let id_token = match o.exchange(&state.client, &cb.code, &flow).await {
        Ok(t) => t,
        Err(e) => return refused(e.0),
    };
    match state
        .engine
        .sign_in_with_id_token(&id_token, &o.config.client_id, &flow.nonce)
        .await
    {
        Err(r) => refused(r.message),
        Ok(s) => {
            // A page, not a redirect: the browser arrived from the IdP's
            // site, and a `SameSite=Strict` session cookie set now is sent
            // only on a navigation that starts here.
            let mut page = html_page(
                StatusCode::OK,
                html! {
                    (DOCTYPE)
                    html lang="en" {
                        head {
                            meta charset="utf-8";
                            meta http-equiv="refresh" content="0; url=/ui/";
                            title { "Signed in" }
                        }
                        body { p { "Signed in as " (s.identity.name) ". " a href="/ui/" { "Continue" } } }
                    }
                },
            );
            let ttl = (s.expires_at - state.engine.now()) / 1000;
            page.0.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(state, COOKIE, &s.secret, ttl),
            );
            page
        }
    }
}

#[derive(Deserialize)]
struct CsrfOnly {
    #[allow(dead_code)] // checked by `form`
    csrf: String,
}

async fn logout(AxState(state): AxState<State>, req: Request) -> Page {
    let s = match session(&state, req.headers()).await {
        Ok(s) => s,
        Err(p) => return p,
    };
    if let Err(r) = form::<CsrfOnly>(req, Some(&s)).await {
        return refusal_page(Some(&s), &r);
    }
    if let Err(r) = state.engine.sign_out(&s.secret).await {
        return refusal_page(Some(&s), &r);
    }
    let mut page = redirect("/ui/login");
    page.0
        .headers_mut()
        .append(header::SET_COOKIE, set_cookie(&state, COOKIE, "", 0));
    page
}

// ------------------------------------------------------------ queue and history

/// A page listing the jobs of one approval-queue query.
async fn job_list(
    state: &State,
    headers: &HeaderMap,
    title: &str,
    query: ApprovalQuery,
    body: impl FnOnce(&[JobView]) -> Markup,
) -> Page {
    let s = match session(state, headers).await {
        Ok(s) => s,
        Err(p) => return p,
    };
    match state.engine.list_approvals(&s.identity, query).await {
        Err(r) => refusal_page(Some(&s), &r),
        Ok(page) => html_page(StatusCode::OK, layout(title, Some(&s), body(&page.items))),
    }
}

async fn queue(AxState(state): AxState<State>, headers: HeaderMap) -> Page {
    let query = ApprovalQuery {
        actionable_only: true,
        page_size: 200,
        ..ApprovalQuery::default()
    };
    job_list(&state, &headers, "Waiting for you", query, |items| {
        html! {
            div data-refresh="15" {}
            @if items.is_empty() {
                p.empty { "Nothing waits for your approval." }
            } @else {
                p.hint { (items.len()) " job(s), oldest first. Red needs two or more people; amber one." }
                ul.jobs { @for v in items { (job_row(v)) } }
            }
        }
    })
    .await
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct HistoryArgs {
    state: String,
    rule: String,
    approver: String,
    since: String,
    until: String,
    page_token: String,
}

async fn history(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    args: Result<Query<HistoryArgs>, QueryRejection>,
) -> Page {
    let s = match session(&state, &headers).await {
        Ok(s) => s,
        Err(p) => return p,
    };
    let Ok(Query(a)) = args else {
        return refusal_page(
            Some(&s),
            &Refusal::field(Reason::InvalidArgument, "query", "unknown filter values"),
        );
    };
    let q = api::ApprovalsQuery {
        include_resolved: true,
        tenant: None,
        actionable_only: false,
        unacknowledged_overrides: false,
        state: None,
        rule: Some(a.rule.clone()),
        approver: Some(a.approver.clone()),
        since: Some(a.since.clone()),
        until: Some(a.until.clone()),
        page_size: Some(100),
        page_token: a.page_token.clone(),
    };
    let mut query = match q.query() {
        Ok(q) => q,
        Err(e) => return refusal_page(Some(&s), &e.refusal),
    };
    if !a.state.is_empty() {
        match JobState::parse(&a.state) {
            Some(st) => query.state = Some(st),
            None => {
                return refusal_page(
                    Some(&s),
                    &Refusal::field(
                        Reason::InvalidArgument,
                        "state",
                        format!("`{}` is not a job state", a.state),
                    ),
                );
            }
        }
    }
    let page = match state.engine.list_approvals(&s.identity, query).await {
        Ok(p) => p,
        Err(r) => return refusal_page(Some(&s), &r),
    };
    let next = (!page.next_page_token.is_empty()).then(|| {
        serde_urlencoded::to_string([
            ("state", a.state.as_str()),
            ("rule", a.rule.as_str()),
            ("approver", a.approver.as_str()),
            ("since", a.since.as_str()),
            ("until", a.until.as_str()),
            ("page_token", page.next_page_token.as_str()),
        ])
        .unwrap_or_default()
    });
    html_page(
        StatusCode::OK,
        layout(
            "History",
            Some(&s),
            html! {
                form.filters method="get" action="/ui/history" {
                    label { "State"
                        select name="state" {
                            option value="" { "any" }
                            @for st in JobState::ALL {
                                option value=(st.as_str()) selected[a.state == st.as_str()] { (st.as_str()) }
                            }
                        }
                    }
                    label { "Rule" input name="rule" value=(a.rule); }
                    label { "Approver" input name="approver" value=(a.approver); }
                    label { "From" input type="date" name="since" value=(a.since); }
                    label { "Before" input type="date" name="until" value=(a.until); }
                    button type="submit" { "Filter" }
                }
                @if page.items.is_empty() { p.empty { "No jobs match." } }
                ul.jobs { @for v in &page.items { (job_row(v)) } }
                @if let Some(n) = next { p { a href={ "/ui/history?" (n) } { "Older →" } } }
            },
        ),
    )
}

async fn overrides(AxState(state): AxState<State>, headers: HeaderMap) -> Page {
    let query = ApprovalQuery {
        unacknowledged_overrides: true,
        page_size: 200,
        ..ApprovalQuery::default()
    };
    job_list(&state, &headers, "Break-glass review", query, |items| {
        html! {
            p.hint { "Overrides wait here until someone other than who overrode acknowledges them." }
            @if items.is_empty() { p.empty { "No override waits for review." } }
            ul.jobs { @for v in items { (job_row(v)) } }
        }
    })
    .await
}

fn stats_markup(st: &ReviewStats) -> Markup {
    html! {
        dl.stats {
            dt { "Approvals" } dd #approvals { (st.approvals) }
            dt { "Rejections" } dd #rejections { (st.rejections) }
            dt { "Median review time" }
            dd #median { @match st.median_review_ms { Some(ms) => (span(ms.max(1000))), None => "—" } }
        }
        p.hint { "Jobs created since " (crate::clock::rfc3339(st.since)) "." }
    }
}

async fn me(AxState(state): AxState<State>, headers: HeaderMap) -> Page {
    let s = match session(&state, &headers).await {
        Ok(s) => s,
        Err(p) => return p,
    };
    match state
        .engine
        .review_stats(&s.identity, STATS_WINDOW_MS)
        .await
    {
        Err(r) => refusal_page(Some(&s), &r),
        Ok(st) => html_page(
            StatusCode::OK,
            layout(
                &format!("{}: the last 30 days", s.identity.name),
                Some(&s),
                stats_markup(&st),
            ),
        ),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct OutboxArgs {
    state: String,
}

async fn outbox(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    args: Result<Query<OutboxArgs>, QueryRejection>,
) -> Page {
    let s = match session(&state, &headers).await {
        Ok(s) => s,
        Err(p) => return p,
    };
    let filter = args.map(|Query(a)| a.state).unwrap_or_default();
    match state.engine.deliveries(&s.identity, &filter, 200).await {
        Err(r) => refusal_page(Some(&s), &r),
        Ok(rows) => html_page(
            StatusCode::OK,
            layout(
                "Outbox",
                Some(&s),
                html! {
                    p.hint {
                        "Notifications by channel, newest first. "
                        a href="/ui/outbox?state=dead" { "Dead letters" } " · "
                        a href="/ui/outbox?state=pending" { "Pending" } " · "
                        a href="/ui/outbox" { "All" }
                    }
                    @if rows.is_empty() { p.empty { "Nothing here." } }
                    ul.jobs {
                        @for d in &rows {
                            li.job.(if d.state == "dead" { "dual" } else { "" }) {
                                a href={ "/ui/jobs/" (d.message.job_id) } {
                                    span.title { (d.message.kind.as_str()) " → " (d.channel) ": " (d.state) }
                                    span.meta { (d.message.id) " · " (d.attempts) " tries" }
                                    @if let Some(e) = &d.last_error { span.times { (e) } }
                                }
                            }
                        }
                    }
                },
            ),
        ),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StatsArgs {
    since: String,
    tenant: String,
}

/// `Some` quantile as a span, `None` as a dash.
fn maybe_span(ms: Option<i64>) -> String {
    ms.map_or_else(|| "—".into(), |ms| span(ms.max(1000)))
}

fn stats_report(r: &crate::stats::Report, since: &str) -> Markup {
    use super::charts;
    let at = crate::clock::rfc3339;
    html! {
        form.filters method="get" action="/ui/stats" {
            label { "Window"
                select name="since" {
                    @for (v, name) in [("24h", "last 24 hours"), ("7d", "last 7 days"), ("30d", "last 30 days"), ("90d", "last 90 days")] {
                        option value=(v) selected[v == since] { (name) }
                    }
                }
            }
            @if let Some(t) = &r.tenant { input type="hidden" name="tenant" value=(t); }
            button type="submit" { "Show" }
        }
        p.hint { "Jobs decided from " (at(r.since)) " to " (at(r.until)) ", from the audit log." }
        dl.stats #summary {
            dt { "Jobs" } dd #jobs { (r.jobs) }
            @for (tier, n) in &r.decisions { dt { (tier) } dd { (n) } }
            dt { "Median time to decision" } dd #median { (maybe_span(r.time_to_decision.median_ms)) }
            dt { "90th percentile" } dd #p90 { (maybe_span(r.time_to_decision.p90_ms)) }
            dt { "Expired waiting" } dd #expiries { (r.expiries) }
            dt { "Approved, never bound" } dd { (r.expired_unbound) }
            dt { "Escalations" } dd #escalations { (r.escalations) }
            dt { "Overrides" } dd #overrides { (r.overrides) }
        }
        h2 { "Time to decision" }
        (charts::time_to_decision(&r.time_to_decision_histogram))
        h2 { "Queue depth" }
        (charts::queue_depth(&r.queue_depth, &at(r.since), &at(r.until)))
        h2 { "Approvers" }
        @if r.approvers.is_empty() { p.empty { "No reviews in this window." } } @else {
            (charts::approvals_per_approver(&r.approvers))
            table.stats #approvers {
                tr { th { "Approver" } th { "Approvals" } th { "Rejections" } th { "Rate" } th { "Median review" } th { "Flag" } }
                @for a in &r.approvers {
                    tr.(if a.rubber_stamp.is_some() { "flagged" } else { "" }) {
                        td { (a.approver) } td { (a.approvals) } td { (a.rejections) }
                        td { (format!("{:.0}%", a.approval_rate * 100.0)) }
                        td { (maybe_span(a.median_review_ms)) }
                        td { @if let Some(w) = &a.rubber_stamp { "Rubber stamp? " (w) } }
                    }
                }
            }
            p.hint {
                "Flagged: at least " (r.thresholds.min_approvals) " approvals, at most "
                (r.thresholds.max_rejections) " rejections and a median review under "
                (r.thresholds.max_median_review_secs) " s, measured from when the job entered the queue."
            }
        }
        h2 { "By rule" }
        table.stats #by-rule {
            tr { th { "Rule" } th { "Jobs" } th { "Approved" } th { "Rejected" } th { "Expired" } th { "Median" } th { "p90" } }
            @for x in &r.by_rule {
                tr { td.mono { (x.rule) } td { (x.jobs) } td { (x.approved) } td { (x.rejected) } td { (x.expired) }
                     td { (maybe_span(x.time_to_decision.median_ms)) } td { (maybe_span(x.time_to_decision.p90_ms)) } }
            }
        }
        h2 { "By gate role" }
        table.stats #by-role {
            tr { th { "Role" } th { "Jobs" } th { "Median" } th { "p90" } }
            @for x in &r.by_role {
                tr { td { (x.role) } td { (x.jobs) } td { (maybe_span(x.time_to_decision.median_ms)) } td { (maybe_span(x.time_to_decision.p90_ms)) } }
            }
        }
        h2 { "Rejection reasons" }
        @if r.rejection_reasons.is_empty() { p.empty { "No rejections." } }
        ul #reasons { @for x in &r.rejection_reasons { li { (x.count) " × " (x.reason) } } }
        h2 { "Slowest decisions" }
        ul.jobs #slowest {
            @for j in &r.slowest {
                li.job { a href={ "/ui/jobs/" (j.job_id) } {
                    span.title { (j.job_id) }
                    span.meta { (j.rule) " · " (j.outcome) " after " (span(j.ms.max(1000))) }
                } }
            }
        }
    }
}

async fn stats(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    args: Result<Query<StatsArgs>, QueryRejection>,
) -> Page {
    let s = match session(&state, &headers).await {
        Ok(s) => s,
        Err(p) => return p,
    };
    let a = args.map(|Query(a)| a).unwrap_or_default();
    let since = if a.since.is_empty() {
        "7d".to_owned()
    } else {
        a.since
    };
    let report = match api::stats_window(Some(&since)) {
        Ok(w) => state.engine.stats(&s.identity, w, Some(&a.tenant)).await,
        Err(r) => Err(r),
    };
    match report {
        Err(r) => refusal_page(Some(&s), &r),
        Ok(r) => html_page(
            StatusCode::OK,
            layout("Statistics", Some(&s), stats_report(&r, &since)),
        ),
    }
}

#[derive(Deserialize)]
struct PolicyArgs {
    #[serde(default)]
    id: String,
    #[serde(default)]
    tenant: String,
}

async fn policy(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    args: Result<Query<PolicyArgs>, QueryRejection>,
) -> Page {
    let s = match session(&state, &headers).await {
        Ok(s) => s,
        Err(p) => return p,
    };
    let (id, tenant) = args.map(|Query(a)| (a.id, a.tenant)).unwrap_or_default();
    match state.engine.get_policy(&s.identity, &tenant, &id).await {
        Err(r) => refusal_page(Some(&s), &r),
        Ok(v) => {
            let d = api::snapshot_doc(&v, true);
            html_page(
                StatusCode::OK,
                layout(
                    "Policy",
                    Some(&s),
                    html! {
                        p.mono { (d.id) }
                        p { "version " (d.version.map_or("-".into(), |v| v.to_string())) " · "
                            (d.rule_count) " rules · "
                            @if d.active { "active" } @else { "not active" }
                            @if let Some(r) = &d.revoked_at { " · revoked " (r) } }
                        pre.source { (d.source.unwrap_or_default()) }
                    },
                ),
            )
        }
    }
}

// ------------------------------------------------------------ a job

fn job_markup(s: &Session, v: &JobView, doc: &JobDoc, notice: Option<Markup>) -> Markup {
    let r = &v.record;
    let e = &r.evaluation;
    let (class, label) = stakes(v);
    let proposal = doc.content.get("proposal").cloned().unwrap_or_default();
    let params = doc.content.get("params").cloned().unwrap_or_default();
    let pretty = serde_json::to_string_pretty(&params).unwrap_or_default();
    let may_act = crate::approval::may_act_on(r, &s.identity, v.at);
    let snapshot_link = format!(
        "/ui/policy?{}",
        serde_urlencoded::to_string([("id", r.snapshot_id.as_str())]).unwrap_or_default()
    );
    html! {
        @if let Some(n) = notice { (n) }
        section.card.(class) {
            p.meta {
                span.badge.(class) { (label) }
                @if r.overridden { span.badge.breakglass { "break-glass" } }
                " state " strong #state { (v.state.as_str()) }
            }
            h2 { (e.decision_summary.title) }
            p { strong { "Why: " } (e.decision_summary.why) }
            p { strong { "Next: " } (e.decision_summary.next_effect) }
        }
        section.card {
            h3 { "Proposal" }
            dl {
                dt { "Blast radius" } dd { (proposal.get("blast_radius").and_then(|x| x.as_str()).filter(|x| !x.is_empty()).unwrap_or("not stated")) }
                dt { "Reversible" } dd { @match proposal.get("reversible").and_then(|x| x.as_bool()) { Some(true) => "yes", Some(false) => "no", None => "not stated" } }
                dt { "Estimated cost" } dd { @match proposal.get("estimated_cost_usd").and_then(|x| x.as_f64()) { Some(c) => { "$" (c) }, None => "not stated" } }
                dt { "Requested by" } dd { (r.requester) }
                dt { "Target" } dd.mono { (doc.content.get("target").and_then(|x| x.as_str()).unwrap_or("")) }
                dt { "Topic / action" } dd.mono {
                    (doc.content.get("topic").and_then(|x| x.as_str()).unwrap_or("")) " / "
                    (doc.content.get("action").and_then(|x| x.as_str()).unwrap_or(""))
                }
            }
        }
        section.card {
            h3 { "Exact params that will run" }
            pre #params { (pretty) }
            details { summary { "Canonical job (the bytes that are hashed and bound)" } pre.mono { (r.canonical_job) } }
        }
        section.card {
            h3 { "Policy" }
            p { "Primary rule " strong.mono { (e.primary_rule) } ": " (e.reason) }
            p { "Matched rules: " @for (i, m) in e.matched_rules.iter().enumerate() { @if i > 0 { ", " } span.mono { (m) } } }
            p { "Snapshot " a.mono href=(snapshot_link) { (r.snapshot_id) } }
            p { "Job hash " span.mono #job-hash { (r.job_hash) } }
        }
        section.card {
            h3 { "Gates" }
            ul.gates {
                @for g in &doc.gates {
                    li { (g.filled) " of " (g.approvers) " from " (g.roles.join(" or "))
                        @if !g.filled_by.is_empty() { " — " (g.filled_by.join(", ")) } }
                }
            }
            @if !doc.approvals.is_empty() {
                h3 { "Approvals" }
                ul.approvals {
                    @for a in &doc.approvals {
                        li { strong { (a.approver) } " (" (a.role.as_deref().unwrap_or("no slot")) ", " (a.channel) ", " (a.at) "): " (a.reason)
                            @if !a.note.is_empty() { " — " (a.note) } }
                    }
                }
            }
            @if let Some(by) = &r.resolved_by {
                p { (r.resolution.as_deref().unwrap_or("")) " by " strong { (by) }
                    @if let Some(c) = &r.resolved_comment { ": " (c) } }
            }
        }
        @if may_act {
            section.card.actions {
                form #approve-form method="post" action={ "/ui/jobs/" (r.job_id) "/approve" } {
                    input type="hidden" name="csrf" value=(s.csrf());
                    input type="hidden" name="job_hash" value=(r.job_hash);
                    input type="hidden" name="snapshot" value=(r.snapshot_id);
                    label { "Reason (required)" input name="reason" required; }
                    label { "Note" input name="note"; }
                    button.approve type="submit" { "Approve" }
                }
                form #reject-form method="post" action={ "/ui/jobs/" (r.job_id) "/reject" } {
                    input type="hidden" name="csrf" value=(s.csrf());
                    label { "Reason (required)" input name="reason" required; }
                    label { "Note" input name="note"; }
                    button.reject type="submit" { "Reject" }
                }
            }
        } @else if r.overridden && r.override_ack_by.is_none() {
            section.card.actions {
                form #ack-form method="post" action={ "/ui/jobs/" (r.job_id) "/acknowledge" } {
                    input type="hidden" name="csrf" value=(s.csrf());
                    label { "Note" input name="note"; }
                    button type="submit" { "Acknowledge override" }
                }
            }
        } @else if v.state == JobState::Pending {
            p.hint { "You cannot act on this job (you requested it, already approved it, or hold no role its open slots need)." }
        }
    }
}

async fn render_job(
    state: &State,
    s: &Session,
    job_id: &str,
    notice: Option<Markup>,
    status: StatusCode,
) -> Page {
    match state.engine.get_job(&s.identity, job_id).await {
        Err(r) => refusal_page(Some(s), &r),
        Ok(v) => {
            let doc = api::job_doc(&v);
            html_page(
                status,
                layout(
                    &format!("Job {job_id}"),
                    Some(s),
                    job_markup(s, &v, &doc, notice),
                ),
            )
        }
    }
}

#[derive(Deserialize, Default)]
struct Done {
    done: Option<String>,
}

async fn job_page(
    AxState(state): AxState<State>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
    done: Result<Query<Done>, QueryRejection>,
) -> Page {
    let s = match session(&state, &headers).await {
        Ok(s) => s,
        Err(p) => return p,
    };
    let notice = done.ok().and_then(|Query(d)| d.done).map(|d| {
        let what = match d.as_str() {
            "approved" => "Your approval was recorded.",
            "rejected" => "The job was rejected.",
            "acknowledged" => "The override was acknowledged.",
            _ => "Done.",
        };
        html! { div.notice role="status" { (what) } }
    });
    render_job(&state, &s, &job_id, notice, StatusCode::OK).await
}

#[derive(Deserialize)]
struct ReviewForm {
    #[allow(dead_code)] // checked by `form`
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    note: String,
    #[serde(default)]
    job_hash: String,
    #[serde(default)]
    snapshot: String,
}

/// What a review form asks for.
#[derive(Clone, Copy)]
enum Act {
    Approve,
    Reject,
    Acknowledge,
}

impl Act {
    /// The `done=` word the job page shows a notice for.
    fn done(self) -> &'static str {
        match self {
            Act::Approve => "approved",
            Act::Reject => "rejected",
            Act::Acknowledge => "acknowledged",
        }
    }
}

async fn act(state: State, job_id: String, req: Request, what: Act) -> Page {
    let s = match session(&state, req.headers()).await {
        Ok(s) => s,
        Err(p) => return p,
    };
    let f: ReviewForm = match form(req, Some(&s)).await {
        Ok(f) => f,
        Err(r) => return refusal_page(Some(&s), &r),
    };
    let result = match what {
        Act::Approve => {
            state
                .engine
                .approve(
                    &s.identity,
                    &job_id,
                    Approve {
                        reason: f.reason,
                        note: f.note,
                        channel: Channel::Ui,
                        // The page always says what the person saw.
                        expected_job_hash: Some(f.job_hash),
                        expected_snapshot: Some(f.snapshot),
                    },
                )
                .await
        }
        Act::Reject => {
            state
                .engine
                .reject(&s.identity, &job_id, &f.reason, &f.note)
                .await
        }
        Act::Acknowledge => {
            state
                .engine
                .acknowledge_override(&s.identity, &job_id, &f.note)
                .await
        }
    };
    match result {
        Ok(_) => redirect(&format!("/ui/jobs/{job_id}?done={}", what.done())),
        Err(r) => {
            let status =
                StatusCode::from_u16(http_status(r.reason)).unwrap_or(StatusCode::BAD_REQUEST);
            render_job(&state, &s, &job_id, Some(banner(&r)), status).await
        }
    }
}

async fn approve(AxState(state): AxState<State>, Path(job_id): Path<String>, req: Request) -> Page {
    act(state, job_id, req, Act::Approve).await
}

async fn reject(AxState(state): AxState<State>, Path(job_id): Path<String>, req: Request) -> Page {
    act(state, job_id, req, Act::Reject).await
}

async fn acknowledge(
    AxState(state): AxState<State>,
    Path(job_id): Path<String>,
    req: Request,
) -> Page {
    act(state, job_id, req, Act::Acknowledge).await
}

// ------------------------------------------------------------ static

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        include_str!("page.css"),
    )
}

async fn js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        PreEscaped(include_str!("page.js")).into_string(),
    )
}
