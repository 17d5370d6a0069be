//! The HTTP door: the JSON API under `/api/v1/` and the approver page
//! under `/ui/`, over the same engine as gRPC. Like the gRPC door it only
//! authenticates and translates; every rule is the engine's.
//!
//! - `api`: the JSON routes and their types, from which the OpenAPI
//!   document served at `/api/v1/openapi.json` is generated;
//! - `page`: the server-rendered approver page;
//! - here: the state they share, the one error shape, the extractors
//!   that turn malformed requests into located 4xx answers, and serving.

pub(crate) mod api;
mod charts;
mod page;
mod slack;

use crate::engine::Engine;
use crate::identity::{Identity, NoCaller};
use crate::refusal::{Reason, Refusal};
use crate::service::status::http_status;
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::future::Future;
use std::sync::Arc;
use utoipa::ToSchema;

pub use api::openapi;

/// What every handler shares.
pub struct HttpState {
    pub engine: Arc<Engine>,
    /// Largest JSON body accepted, except policy sources.
    pub max_body_bytes: usize,
    /// Largest policy source accepted by reload.
    pub max_policy_bytes: usize,
    /// Session cookies are marked `Secure` (the listener is behind TLS).
    pub secure_cookies: bool,
    /// The Slack app whose interactions `/slack/interactions` takes.
    pub slack: Option<crate::notify::SlackApp>,
    /// For calls out (Slack's `views.open`, the IdP's token endpoint).
    pub client: reqwest::Client,
    /// Page sign-in through the OIDC issuer, when configured.
    pub oidc: Option<Arc<crate::oidc::SignIn>>,
}

type State = Arc<HttpState>;

/// Settings for the HTTP door.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    pub max_body_bytes: usize,
    pub max_policy_bytes: usize,
    pub secure_cookies: bool,
    pub slack: Option<crate::notify::SlackApp>,
    /// Page sign-in through the OIDC issuer.
    pub oidc: Option<Arc<crate::oidc::SignIn>>,
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            max_body_bytes: 1024 * 1024 + 64 * 1024,
            max_policy_bytes: 16 * 1024 * 1024,
            secure_cookies: false,
            slack: None,
            oidc: None,
        }
    }
}

/// The whole HTTP application: API, OpenAPI document, page, health.
pub fn app(engine: Arc<Engine>, options: HttpOptions) -> Router {
    let state = Arc::new(HttpState {
        engine,
        max_body_bytes: options.max_body_bytes,
        max_policy_bytes: options.max_policy_bytes,
        secure_cookies: options.secure_cookies,
        slack: options.slack,
        oidc: options.oidc,
        client: crate::notify::outbound_client().unwrap_or_default(),
    });
    let (api, doc) = api::router().split_for_parts();
    let doc = Arc::new(doc);
    api.route(
        "/api/v1/openapi.json",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc.as_ref().clone()) }
        }),
    )
    .route("/metrics", axum::routing::get(metrics))
    .merge(page::router())
    .route(
        "/slack/interactions",
        axum::routing::post(slack::interactions)
            .layer(axum::extract::DefaultBodyLimit::max(64 * 1024)),
    )
    .fallback(|| async { ApiError::route_not_found() })
    .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() })
    .with_state(state)
    .layer(
        tower_http::set_header::SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    )
    .layer(
        tower_http::set_header::SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ),
    )
    .layer(
        tower_http::set_header::SetResponseHeaderLayer::if_not_present(
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store"),
        ),
    )
    .layer(axum::middleware::from_fn(close_if_body_unread))
}

/// `GET /metrics`: the Prometheus (OpenMetrics) exposition, for global
/// operators and auditors (a scraper sends a bearer token).
async fn metrics(
    axum::extract::State(s): axum::extract::State<State>,
    Caller(who): Caller,
) -> Result<Response, ApiError> {
    let text = s.engine.metrics_text(&who).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

/// Answers with `Connection: close` when the handler left part of the
/// request body unread (a body over the limit, or one refused before it
/// was read). The server drops such a connection after the response;
/// saying so keeps a client from sending its next request down it.
async fn close_if_body_unread(req: Request, next: axum::middleware::Next) -> Response {
    use http_body::Body as _;
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let finished = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (parts, body) = req.into_parts();
    let body = axum::body::Body::new(Watched {
        inner: body,
        finished: finished.clone(),
    });
    let mut resp = next.run(Request::from_parts(parts, body)).await;
    if !finished.load(std::sync::atomic::Ordering::Acquire) {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

/// A request body that records when it has been read to its end.
struct Watched {
    inner: axum::body::Body,
    finished: Arc<std::sync::atomic::AtomicBool>,
}

impl http_body::Body for Watched {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, axum::Error>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, std::task::Poll::Ready(None)) || self.inner.is_end_stream() {
            self.finished
                .store(true, std::sync::atomic::Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `app` on `listener` until `shutdown` completes, then lets
/// requests in flight finish.
pub async fn serve(
    listener: super::limit::Limited,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// As [`serve`], over TLS connections; handlers see the client's
/// certificate through `ConnectInfo<tls::Peer>`.
pub async fn serve_tls(
    incoming: crate::tls::TlsIncoming,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(
        incoming,
        app.into_make_service_with_connect_info::<crate::tls::Peer>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

// ------------------------------------------------------------ errors

/// The one error shape of the API.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable, e.g. `HASH_MISMATCH`.
    pub reason: String,
    pub message: String,
    /// The request field at fault, when one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// A refusal on its way out, with its HTTP status.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub refusal: Refusal,
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> ApiError {
        let status = StatusCode::from_u16(http_status(refusal.reason))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError { status, refusal }
    }
}

impl ApiError {
    /// A transport-level refusal whose status the request's form decides
    /// (size, media type, route), not the reason's mapping.
    fn with_status(
        status: StatusCode,
        reason: Reason,
        field: Option<&str>,
        message: String,
    ) -> Self {
        ApiError {
            status,
            refusal: Refusal {
                reason,
                message,
                field: field.map(str::to_owned),
            },
        }
    }

    fn route_not_found() -> ApiError {
        ApiError::with_status(
            StatusCode::NOT_FOUND,
            Reason::NotFound,
            None,
            "no such route; the API is described at /api/v1/openapi.json".into(),
        )
    }

    fn method_not_allowed() -> ApiError {
        ApiError::with_status(
            StatusCode::METHOD_NOT_ALLOWED,
            Reason::InvalidArgument,
            None,
            "this route does not take that method; see /api/v1/openapi.json".into(),
        )
    }

    fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        Refusal::field(Reason::InvalidArgument, field, message).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        crate::observe::refused(self.refusal.reason.as_str());
        let body = ErrorBody {
            error: ErrorDetail {
                reason: self.refusal.reason.as_str().to_owned(),
                message: self.refusal.message,
                field: self.refusal.field,
            },
        };
        let mut r = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"gavel\""),
            );
        }
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            // Per-identity bounds refill within a second (the message
            // names the exact wait).
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

// ------------------------------------------------------------ extractors

/// The caller of an API route, from `Authorization: Bearer <token>`.
pub struct Caller(pub Identity);

impl FromRequestParts<State> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &State) -> Result<Self, ApiError> {
        let unauthenticated =
            |m: &str| -> ApiError { Refusal::new(Reason::Unauthenticated, m).into() };
        let value = match parts.headers.get(header::AUTHORIZATION) {
            None => None,
            Some(v) => Some(
                v.to_str()
                    .map_err(|_| unauthenticated("the Authorization header is not text"))?,
            ),
        };
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<crate::tls::Peer>>();
        let cert = peer.and_then(|p| p.0.cert.as_deref());
        state
            .engine
            .directory()
            .caller(value, cert, state.engine.now())
            .map_err(|e| match e {
                NoCaller::NoCredential => {
                    unauthenticated("missing `Authorization: Bearer <token>` header")
                }
                NoCaller::NotBearer => {
                    unauthenticated("the Authorization header must be `Bearer <token>`")
                }
                NoCaller::Refused(m) => unauthenticated(m),
            })
            .and_then(|who| {
                crate::observe::identity(&who.name);
                state.engine.admit(&who)?;
                Ok(Caller(who))
            })
    }
}

/// A request body type: how large it may be.
pub trait RequestBody: DeserializeOwned {
    /// Policy sources get the policy limit, everything else the body limit.
    const POLICY_SIZED: bool = false;
}

/// Reads the body: `application/json`, within the size limit, strict JSON
/// (no duplicate keys, bounded nesting, exact integers).
async fn json_value(
    req: Request,
    state: &State,
    policy_sized: bool,
) -> Result<serde_json::Value, ApiError> {
    json_content_type(req.headers())?;
    let limit = if policy_sized {
        state.max_policy_bytes
    } else {
        state.max_body_bytes
    };
    let bytes = axum::body::to_bytes(req.into_body(), limit)
        .await
        .map_err(|_| {
            ApiError::with_status(
                StatusCode::PAYLOAD_TOO_LARGE,
                Reason::InvalidArgument,
                Some("body"),
                format!("the body is larger than the limit of {limit} bytes"),
            )
        })?;
    let depth = state.engine.limits().max_params_depth + 4;
    crate::canonical::parse_strict(&bytes, depth)
        .map_err(|e| ApiError::invalid("body", format!("invalid JSON: {e}")))
}

fn json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let unsupported = || {
        ApiError::with_status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Reason::InvalidArgument,
            Some("content-type"),
            "send the body as `Content-Type: application/json`".into(),
        )
    };
    let value = headers
        .get(header::CONTENT_TYPE)
        .ok_or_else(unsupported)?
        .to_str()
        .map_err(|_| unsupported())?;
    let essence = value.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(unsupported())
    }
}

/// A JSON body of type `T`; unknown fields and wrong types are refused
/// naming the field.
pub struct JsonBody<T>(pub T);

impl<T: RequestBody> FromRequest<State> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &State) -> Result<Self, ApiError> {
        let value = json_value(req, state, T::POLICY_SIZED).await?;
        if !value.is_object() {
            return Err(ApiError::invalid("body", "the body must be a JSON object"));
        }
        serde_path_to_error::deserialize(value)
            .map(JsonBody)
            .map_err(|e| {
                let path = e.path().to_string();
                let field = if path == "." { "body".to_owned() } else { path };
                ApiError::invalid(&field, e.into_inner().to_string())
            })
    }
}

/// Query parameters of type `T`; unknown ones and bad values are refused
/// naming the parameter.
pub struct QueryArgs<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryArgs<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(QueryArgs)
            .map_err(|e| {
                let path = e.path().to_string();
                let field = if path == "." {
                    "query".to_owned()
                } else {
                    path
                };
                ApiError::invalid(&field, e.into_inner().to_string())
            })
    }
}

/// A path segment (a job or snapshot id), refused as a located 400 when
/// it is not valid text.
pub struct PathArg(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathArg {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|p| PathArg(p.0))
            .map_err(|e| ApiError::invalid("path", e.body_text()))
    }
}
