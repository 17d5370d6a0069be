//! OIDC JWT bearer tokens against a real server: tokens signed here with an
//! Ed25519 key whose JWKS the server reads from a file or fetches from a
//! small local IdP; expiry by the injected clock; wrong issuer and
//! audience, `alg: none`, a tampered payload, a shared-secret token made
//! with the public key, an unlisted key and an unknown subject refused; one
//! person by token and by JWT counted once; roles from allowed groups.

use crate::helpers::{Spawn, TestApp, clients, job, spawn_with, token};
use crate::store::Backend;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use gavel::oidc::{OidcConfig, Verifier};
use gavel::proto::v1 as pb;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::sync::Arc;

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "gavel";

/// An Ed25519 signing key and its JWKS.
struct Signer {
    key: EncodingKey,
    public: Vec<u8>,
    kid: &'static str,
}

impl Signer {
    fn new(kid: &'static str) -> Signer {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        Signer {
            key: EncodingKey::from_ed_der(&pair.serialize_der()),
            public: pair.public_key_raw().to_vec(),
            kid,
        }
    }

    fn jwks(&self) -> Value {
        json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": B64.encode(&self.public),
                         "kid": self.kid, "alg": "EdDSA", "use": "sig"}]})
    }

    fn sign(&self, claims: &Value) -> String {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = Some(self.kid.into());
        jsonwebtoken::encode(&h, claims, &self.key).unwrap()
    }
}

fn config(jwks_file: Option<std::path::PathBuf>, jwks_url: Option<String>) -> OidcConfig {
    OidcConfig {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        jwks_file,
        jwks_url,
        jwks_refresh_secs: 300,
        subject_claim: "sub".into(),
        groups_claim: Some("groups".into()),
        group_roles: vec!["finance".into()],
        algorithms: vec!["EdDSA".into(), "RS256".into()],
        leeway_secs: 30,
        sign_in: None,
    }
}

async fn server(signer: &Signer) -> (TestApp, tempfile::TempDir) {
    server_on(signer, Backend::Sqlite)
        .await
        .expect("sqlite server")
}

/// A server on `backend` taking the signer's JWTs, or `None` when
/// PostgreSQL is unavailable.
async fn server_on(signer: &Signer, backend: Backend) -> Option<(TestApp, tempfile::TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, signer.jwks().to_string()).unwrap();
    let verifier = Verifier::new(config(Some(jwks), None)).unwrap();
    let app = spawn_with(Spawn {
        oidc: Some(Arc::new(verifier)),
        ..Spawn::on(backend)
    })
    .await?;
    Some((app, dir))
}

/// Claims valid at the app's clock, for `sub`.
fn claims(app: &TestApp, sub: &str) -> Value {
    let now = app.engine.now() / 1000;
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 300})
}

async fn get_job(app: &TestApp, bearer: &str) -> Result<pb::JobRecord, tonic::Status> {
    let ch = app.channel().await;
    clients(ch, Some(bearer.to_owned()))
        .decision
        .get_job(pb::GetJobRequest {
            job_id: "oidc-1".into(),
        })
        .await
        .map(|r| r.into_inner().job.unwrap())
}

async fn approve(app: &TestApp, bearer: &str, id: &str) -> Result<pb::JobRecord, tonic::Status> {
    let ch = app.channel().await;
    clients(ch, Some(bearer.to_owned()))
        .approval
        .approve(pb::ApproveRequest {
            job_id: id.into(),
            reason: "ok".into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().job.unwrap())
}

fn refused(r: Result<pb::JobRecord, tonic::Status>) -> String {
    let e = r.expect_err("refused");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    e.message().to_owned()
}

async fn jwts_name_people_and_everything_doubtful_is_refused(b: Backend) {
    let signer = Signer::new("k1");
    let Some((app, _dir)) = server_on(&signer, b).await else {
        return;
    };
    let mut agent = app.as_("agent-1").await;
    agent
        .decision
        .decide(pb::DecideRequest {
            job: Some(job("oidc-1", "deploy", &["prod"])),
        })
        .await
        .unwrap();

    // A valid JWT names alice; her approval by JWT and then by her static
    // token counts once (the same person).
    let jwt = signer.sign(&claims(&app, "idp|alice"));
    let rec = approve(&app, &jwt, "oidc-1").await.unwrap();
    assert_eq!(rec.approvals[0].approver, "alice");
    let again = approve(&app, &token("alice"), "oidc-1").await.unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");

    // The HTTP door takes the same JWT.
    let r = crate::http_client()
        .get(format!("http://{}/api/v1/jobs/oidc-1", app.http_addr))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);

    // Expiry follows the engine's clock (plus 30 s leeway).
    app.clock.advance_secs(300 + 31);
    assert_eq!(refused(get_job(&app, &jwt).await), "the JWT has expired");
    let fresh = signer.sign(&claims(&app, "idp|alice"));
    get_job(&app, &fresh).await.unwrap();

    // Not yet valid.
    let mut early = claims(&app, "idp|alice");
    early["nbf"] = json!(app.engine.now() / 1000 + 120);
    assert_eq!(
        refused(get_job(&app, &signer.sign(&early)).await),
        "the JWT is not valid yet"
    );

    // Wrong issuer, wrong audience, no exp.
    let mut c = claims(&app, "idp|alice");
    c["iss"] = json!("https://evil.test");
    assert_eq!(
        refused(get_job(&app, &signer.sign(&c)).await),
        "the JWT's issuer is not the configured one"
    );
    let mut c = claims(&app, "idp|alice");
    c["aud"] = json!("someone-else");
    assert_eq!(
        refused(get_job(&app, &signer.sign(&c)).await),
        "the JWT's audience is not this server"
    );
    let mut c = claims(&app, "idp|alice");
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        refused(get_job(&app, &signer.sign(&c)).await),
        "the JWT lacks exp, iss or aud"
    );

    // alg: none.
    let header = B64.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let body = B64.encode(claims(&app, "idp|alice").to_string());
    let none = format!("{header}.{body}.");
    assert!(get_job(&app, &none).await.is_err());
    let none = format!("{header}.{body}.c2ln");
    assert!(get_job(&app, &none).await.is_err());

    // A tampered payload: alice's signature over bob's name.
    let good = signer.sign(&claims(&app, "idp|alice"));
    let parts: Vec<&str> = good.split('.').collect();
    let forged_body = B64.encode(claims(&app, "idp|bob").to_string());
    let tampered = format!("{}.{forged_body}.{}", parts[0], parts[2]);
    assert_eq!(
        refused(get_job(&app, &tampered).await),
        "the JWT's signature does not verify"
    );

    // HS256 with the issuer's public key as the shared secret.
    let mut h = Header::new(Algorithm::HS256);
    h.kid = Some("k1".into());
    let confused = jsonwebtoken::encode(
        &h,
        &claims(&app, "idp|alice"),
        &EncodingKey::from_secret(&signer.public),
    )
    .unwrap();
    assert_eq!(
        refused(get_job(&app, &confused).await),
        "the JWT's algorithm is not accepted"
    );

    // A key the issuer does not list, and a subject nobody is configured for.
    let stranger = Signer::new("k2");
    assert_eq!(
        refused(get_job(&app, &stranger.sign(&claims(&app, "idp|alice"))).await),
        "the JWT is signed with a key the issuer does not list"
    );
    assert_eq!(
        refused(get_job(&app, &signer.sign(&claims(&app, "idp|mallory"))).await),
        "the JWT's subject belongs to no configured identity"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_groups_add_roles_and_others_do_not() {
    let signer = Signer::new("k1");
    let (app, _dir) = server(&signer).await;
    let mut agent = app.as_("agent-1").await;
    for id in ["pay-1", "pay-2"] {
        agent
            .decision
            .decide(pb::DecideRequest {
                job: Some(job(id, "pay", &["payment"])),
            })
            .await
            .unwrap();
    }
    // bob is a reviewer, not finance: by his token he may not approve.
    let e = approve(&app, &token("bob"), "pay-1").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    // A group outside group_roles adds nothing.
    let mut c = claims(&app, "idp|bob");
    c["groups"] = json!(["admin", "operator"]);
    let e = approve(&app, &signer.sign(&c), "pay-1").await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    // `finance` from the IdP's groups makes him a finance approver.
    c["groups"] = json!(["finance"]);
    let rec = approve(&app, &signer.sign(&c), "pay-2").await.unwrap();
    assert_eq!(rec.approvals[0].approver, "bob");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_fetched_from_the_issuer_and_bad_configurations_refused() {
    // A small IdP serving its JWKS.
    let signer = Signer::new("k1");
    let jwks = signer.jwks();
    let router = axum::Router::new().route(
        "/jwks",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move { axum::Json(jwks) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let idp = tokio::spawn(async move { axum::serve(listener, router).await });
    let client = crate::http_client();

    let v = Verifier::new(config(None, Some(format!("http://{addr}/jwks")))).unwrap();
    let now_ms = 1_800_000_000_000i64;
    let c = json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "idp|alice", "exp": now_ms / 1000 + 60});
    assert_eq!(
        v.verify(&signer.sign(&c), now_ms).unwrap_err(),
        "the JWT is signed with a key the issuer does not list"
    );
    v.refresh(&client).await.unwrap();
    assert_eq!(
        v.verify(&signer.sign(&c), now_ms).unwrap().subject,
        "idp|alice"
    );
    let missing = Verifier::new(config(None, Some(format!("http://{addr}/nothing")))).unwrap();
    assert!(missing.refresh(&client).await.is_err());
    idp.abort();

    // Shared-secret algorithms, two key sources or none: refused at start.
    let mut bad = config(None, Some("http://127.0.0.1:1/jwks".into()));
    bad.algorithms = vec!["HS256".into()];
    assert!(Verifier::new(bad).unwrap_err().0.contains("HS256"));
    assert!(Verifier::new(config(None, None)).is_err());
    assert!(Verifier::new(config(Some("/x".into()), Some("http://x".into()))).is_err());
}

// ------------------------------------------------------------ page sign-in

const CLIENT: &str = "gavel-page";
const CLIENT_SECRET: &str = "client-secret-for-tests";

/// One authorization the fake IdP handed out, waiting for its code.
struct Grant {
    redirect_uri: String,
    challenge: String,
    nonce: String,
    sub: String,
}

/// A fake IdP speaking the authorization code flow with PKCE (RFC 6749
/// §4.1, RFC 7636): `/authorize` logs in whoever `login_as` names and
/// redirects back with a single-use code; `/token` checks the client, its
/// secret, the redirect URI and the PKCE verifier, and signs an ID token.
struct FakeIdp {
    signer: Signer,
    grants: std::sync::Mutex<std::collections::HashMap<String, Grant>>,
    /// The subject who signs in; `deny` answers `access_denied`.
    login_as: std::sync::Mutex<String>,
    /// Sign ID tokens with this nonce instead of the one asked for.
    wrong_nonce: std::sync::atomic::AtomicBool,
    now_s: std::sync::atomic::AtomicI64,
}

fn redirect(to: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    axum::response::Redirect::to(&to).into_response()
}

async fn idp_authorize(
    axum::extract::State(idp): axum::extract::State<Arc<FakeIdp>>,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let get = |k: &str| q.get(k).cloned().unwrap_or_default();
    if get("response_type") != "code"
        || get("client_id") != CLIENT
        || get("code_challenge_method") != "S256"
        || get("code_challenge").len() != 43
        || !get("scope").split(' ').any(|s| s == "openid")
        || get("nonce").is_empty()
    {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            "bad authorization request",
        )
            .into_response();
    }
    let redirect_uri = get("redirect_uri");
    let who = idp.login_as.lock().unwrap().clone();
    let state = get("state");
    if who == "deny" {
        return redirect(format!("{redirect_uri}?error=access_denied&state={state}"));
    }
    let code = format!("code-{}", idp.grants.lock().unwrap().len() + 1);
    idp.grants.lock().unwrap().insert(
        code.clone(),
        Grant {
            redirect_uri: redirect_uri.clone(),
            challenge: get("code_challenge"),
            nonce: get("nonce"),
            sub: who,
        },
    );
    redirect(format!("{redirect_uri}?code={code}&state={state}"))
}

async fn idp_token(
    axum::extract::State(idp): axum::extract::State<Arc<FakeIdp>>,
    axum::Form(f): axum::Form<std::collections::HashMap<String, String>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    use sha2::Digest as _;
    let get = |k: &str| f.get(k).cloned().unwrap_or_default();
    let invalid = |e: &str| {
        (
            axum::http::StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": e})),
        )
            .into_response()
    };
    if get("client_id") != CLIENT || get("client_secret") != CLIENT_SECRET {
        return invalid("invalid_client");
    }
    // A code is used once, whatever the outcome.
    let Some(g) = idp.grants.lock().unwrap().remove(&get("code")) else {
        return invalid("invalid_grant");
    };
    let challenge = B64.encode(sha2::Sha256::digest(get("code_verifier").as_bytes()));
    if get("grant_type") != "authorization_code"
        || get("redirect_uri") != g.redirect_uri
        || challenge != g.challenge
    {
        return invalid("invalid_grant");
    }
    let now = idp.now_s.load(std::sync::atomic::Ordering::SeqCst);
    let nonce = if idp.wrong_nonce.load(std::sync::atomic::Ordering::SeqCst) {
        "not-the-flows-nonce".to_owned()
    } else {
        g.nonce
    };
    let id_token = idp.signer.sign(&json!({
        "iss": ISSUER, "aud": CLIENT, "sub": g.sub, "nonce": nonce,
        "iat": now, "exp": now + 300,
    }));
    axum::Json(json!({"access_token": "opaque", "token_type": "Bearer", "id_token": id_token}))
        .into_response()
}

struct SignInWorld {
    app: TestApp,
    idp: Arc<FakeIdp>,
    browser: reqwest::Client,
    _dir: tempfile::TempDir,
}

async fn sign_in_world(backend: Backend) -> Option<SignInWorld> {
    let idp = Arc::new(FakeIdp {
        signer: Signer::new("k1"),
        grants: Default::default(),
        login_as: std::sync::Mutex::new("idp|alice".into()),
        wrong_nonce: Default::default(),
        now_s: std::sync::atomic::AtomicI64::new(0),
    });
    let router = axum::Router::new()
        .route("/authorize", axum::routing::get(idp_authorize))
        .route("/token", axum::routing::post(idp_token))
        .with_state(idp.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let idp_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });

    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, idp.signer.jwks().to_string()).unwrap();
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, format!("{CLIENT_SECRET}\n")).unwrap();
    // The redirect URL names the page's port, so the page's listener is
    // bound here and handed to the server.
    let http_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http_port = http_listener.local_addr().unwrap().port();
    let sign_in = gavel::oidc::SignInConfig {
        authorization_endpoint: format!("http://{idp_addr}/authorize"),
        token_endpoint: format!("http://{idp_addr}/token"),
        client_id: CLIENT.into(),
        redirect_url: format!("http://127.0.0.1:{http_port}/ui/oidc/callback"),
        client_secret_file: Some(secret),
        client_secret_env: None,
        scopes: vec!["openid".into(), "profile".into()],
        label: "Sign in with Test IdP".into(),
    };
    let mut c = config(Some(jwks), None);
    c.sign_in = Some(sign_in.clone());
    let mut spawn = Spawn {
        oidc: Some(Arc::new(Verifier::new(c).unwrap())),
        ..Spawn::on(backend)
    };
    spawn.http.oidc = Some(Arc::new(gavel::oidc::SignIn::new(sign_in).unwrap()));
    spawn.http_listener = Some(http_listener);
    let app = spawn_with(spawn).await?;
    idp.now_s
        .store(app.engine.now() / 1000, std::sync::atomic::Ordering::SeqCst);
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    Some(SignInWorld {
        app,
        idp,
        browser,
        _dir: dir,
    })
}

/// The `name=value` of a `Set-Cookie` header for `name`.
fn set_cookie(r: &reqwest::Response, name: &str) -> Option<(String, String)> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| {
            let value = v.split(';').next().unwrap().to_owned();
            (value, v.to_owned())
        })
}

fn location(r: &reqwest::Response) -> String {
    r.headers()
        .get("location")
        .expect("a redirect")
        .to_str()
        .unwrap()
        .to_owned()
}

impl SignInWorld {
    fn page(&self, path: &str) -> String {
        format!("http://{}{path}", self.app.http_addr)
    }

    /// The button, then the IdP: the callback URL and the flow cookie.
    async fn to_callback(&self) -> (String, String) {
        let r = self
            .browser
            .get(self.page("/ui/oidc/start"))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_redirection(), "{r:?}");
        let (flow, raw) = set_cookie(&r, "gavel_oidc").expect("a flow cookie");
        assert!(
            raw.contains("HttpOnly") && raw.contains("SameSite=Lax"),
            "{raw}"
        );
        let at_idp = location(&r);
        assert!(at_idp.contains("code_challenge_method=S256"), "{at_idp}");
        let r = self.browser.get(at_idp).send().await.unwrap();
        assert!(r.status().is_redirection(), "{r:?}");
        (location(&r), flow)
    }

    async fn callback(&self, url: &str, cookie: Option<&str>) -> (u16, String, Option<String>) {
        let mut req = self.browser.get(url);
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        let r = req.send().await.unwrap();
        let session = set_cookie(&r, "gavel_session").map(|(v, _)| v);
        let cleared = set_cookie(&r, "gavel_oidc").map(|(_, raw)| raw);
        assert!(
            cleared.is_some_and(|c| c.contains("Max-Age=0")),
            "every callback ends the flow"
        );
        (r.status().as_u16(), r.text().await.unwrap(), session)
    }
}

async fn the_page_signs_in_through_the_idp_with_pkce(b: Backend) {
    let Some(w) = sign_in_world(b).await else {
        return;
    };
    let login = w.browser.get(w.page("/ui/login")).send().await.unwrap();
    assert!(
        login
            .text()
            .await
            .unwrap()
            .contains("Sign in with Test IdP")
    );

    let (callback, flow) = w.to_callback().await;
    assert!(
        callback.starts_with(&w.page("/ui/oidc/callback?code=")),
        "{callback}"
    );
    let (status, body, session) = w.callback(&callback, Some(&flow)).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("Signed in as alice"), "{body}");
    let session = session.expect("a session cookie");
    let queue = w
        .browser
        .get(w.page("/ui/"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(queue.status(), 200);
    assert!(queue.text().await.unwrap().contains("alice"));

    // The same callback again: the code was used once, at the IdP.
    let (status, body, session) = w.callback(&callback, Some(&flow)).await;
    assert_eq!((status, session), (401, None));
    assert!(body.contains("invalid_grant"), "{body}");
}

async fn every_doubtful_sign_in_is_refused_and_signs_no_one_in(b: Backend) {
    let Some(w) = sign_in_world(b).await else {
        return;
    };
    let refused = |(status, body, session): (u16, String, Option<String>), why: &str| {
        assert_eq!(status, 401, "{why}: {body}");
        assert!(session.is_none(), "{why}: no session");
        assert!(body.contains(why), "expected `{why}` in {body}");
    };

    // No flow in this browser (a link from someone else's sign-in).
    let (callback, _) = w.to_callback().await;
    refused(
        w.callback(&callback, None).await,
        "no sign-in is in progress",
    );

    // A state that is not the flow's.
    let (callback, flow) = w.to_callback().await;
    let forged = callback.replace("state=", "state=x");
    refused(
        w.callback(&forged, Some(&flow)).await,
        "state does not match",
    );

    // Another flow's verifier: the IdP's PKCE check fails.
    let (callback, flow) = w.to_callback().await;
    let (_, other) = w.to_callback().await;
    let parts: Vec<&str> = flow.trim_start_matches("gavel_oidc=").split('.').collect();
    let theirs: Vec<&str> = other.trim_start_matches("gavel_oidc=").split('.').collect();
    let swapped = format!(
        "gavel_oidc={}.{}.{}.{}",
        parts[0], parts[1], theirs[2], parts[3]
    );
    refused(w.callback(&callback, Some(&swapped)).await, "invalid_grant");

    // An ID token for another nonce.
    w.idp
        .wrong_nonce
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (callback, flow) = w.to_callback().await;
    refused(w.callback(&callback, Some(&flow)).await, "nonce");
    w.idp
        .wrong_nonce
        .store(false, std::sync::atomic::Ordering::SeqCst);

    // A subject no identity lists.
    *w.idp.login_as.lock().unwrap() = "idp|stranger".into();
    let (callback, flow) = w.to_callback().await;
    refused(
        w.callback(&callback, Some(&flow)).await,
        "no configured identity",
    );

    // The IdP says no.
    *w.idp.login_as.lock().unwrap() = "deny".into();
    let (callback, flow) = w.to_callback().await;
    refused(w.callback(&callback, Some(&flow)).await, "access_denied");

    // Too slow: the flow is older than ten minutes by the server's clock.
    *w.idp.login_as.lock().unwrap() = "idp|alice".into();
    let (callback, flow) = w.to_callback().await;
    w.app.clock.advance_secs(11 * 60);
    refused(w.callback(&callback, Some(&flow)).await, "took too long");

    // An ID token already expired by the server's clock: the IdP's clock
    // stayed eleven minutes behind, and its tokens live five.
    let (callback, flow) = w.to_callback().await;
    refused(w.callback(&callback, Some(&flow)).await, "expired");
}

crate::on_both_backends!(
    jwts_name_people_and_everything_doubtful_is_refused,
    jwts_name_people_and_everything_doubtful_is_refused
);
crate::on_both_backends!(
    the_page_signs_in_through_the_idp_with_pkce,
    the_page_signs_in_through_the_idp_with_pkce
);
crate::on_both_backends!(
    every_doubtful_sign_in_is_refused_and_signs_no_one_in,
    every_doubtful_sign_in_is_refused_and_signs_no_one_in
);
