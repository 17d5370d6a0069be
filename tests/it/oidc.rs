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
    }
}

async fn server(signer: &Signer) -> (TestApp, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, signer.jwks().to_string()).unwrap();
    let verifier = Verifier::new(config(Some(jwks), None)).unwrap();
    let app = spawn_with(Spawn {
        oidc: Some(Arc::new(verifier)),
        ..Spawn::on(Backend::Sqlite)
    })
    .await
    .expect("sqlite server");
    (app, dir)
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwts_name_people_and_everything_doubtful_is_refused() {
    let signer = Signer::new("k1");
    let (app, _dir) = server(&signer).await;
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
