//! OIDC JWT bearer tokens: verified against one configured issuer, audience
//! and key set (a JWKS file, or a URL fetched and refreshed), with an
//! allow-list of asymmetric algorithms. `exp` and `nbf` are checked against
//! the engine's clock (injected), with a small leeway. A verified token
//! names a person only through `jwt_subjects` on their identity: an IdP
//! never creates identities.

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The `[oidc]` table of the configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The `iss` every token must carry.
    pub issuer: String,
    /// The `aud` every token must carry (one of its values).
    pub audience: String,
    /// The issuer's keys as a JWKS file.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// Or as a URL, fetched at start and every `jwks_refresh_secs`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    #[serde(default = "default_refresh")]
    pub jwks_refresh_secs: u64,
    /// The claim naming the person (`sub` by default).
    #[serde(default = "default_subject")]
    pub subject_claim: String,
    /// A claim listing the person's groups; those in `group_roles` become
    /// roles for the request, besides the identity's own.
    #[serde(default)]
    pub groups_claim: Option<String>,
    #[serde(default)]
    pub group_roles: Vec<String>,
    /// Accepted algorithms; asymmetric only.
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// Signing in to the approver page through this issuer.
    #[serde(default)]
    pub sign_in: Option<SignInConfig>,
}

/// `[oidc.sign_in]`: the page signs people in with the authorization code
/// flow and PKCE (S256). The ID token it gets back is verified like a
/// bearer JWT, with the client id as its audience and the flow's nonce.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SignInConfig {
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    pub client_id: String,
    /// Where the IdP sends the browser back: this server's
    /// `…/ui/oidc/callback`, exactly as registered at the IdP.
    pub redirect_url: String,
    /// A confidential client's secret, from a file or an environment
    /// variable (never the configuration itself). PKCE is used either way.
    #[serde(default)]
    pub client_secret_file: Option<PathBuf>,
    #[serde(default)]
    pub client_secret_env: Option<String>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The sign-in button's text.
    #[serde(default = "default_label")]
    pub label: String,
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into()]
}
fn default_label() -> String {
    "Sign in with your identity provider".into()
}

/// Whether a URL may carry sign-in traffic: HTTPS, or HTTP to loopback.
fn secure_url(url: &str) -> bool {
    if url.starts_with("https://") {
        return true;
    }
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', '?']).next().unwrap_or("");
    let host = host.rsplit_once(':').map_or(host, |(h, _)| h);
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

/// A ready sign-in client: its configuration and secret.
#[derive(Clone)]
pub struct SignIn {
    pub config: SignInConfig,
    secret: Option<String>,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn")
            .field("client_id", &self.config.client_id)
            .finish()
    }
}

/// One sign-in in progress, kept in the browser's short-lived flow
/// cookie: the state the IdP must echo, the nonce the ID token must
/// carry, the PKCE verifier, and when it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub state: String,
    pub nonce: String,
    pub verifier: String,
    pub started_ms: i64,
}

/// How long a sign-in may take between the button and the callback.
pub const FLOW_TTL_MS: i64 = 10 * 60 * 1000;

fn random_b64(bytes: usize) -> Result<String, OidcError> {
    use base64::Engine as _;
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).map_err(|e| OidcError(format!("no randomness: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// The PKCE S256 challenge of a verifier (RFC 7636 §4.2).
pub fn pkce_challenge(verifier: &str) -> String {
    use base64::Engine as _;
    use sha2::Digest as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier))
}

impl Flow {
    /// A fresh flow: 256-bit state, nonce and verifier.
    pub fn start(now_ms: i64) -> Result<Flow, OidcError> {
        Ok(Flow {
            state: random_b64(32)?,
            nonce: random_b64(32)?,
            verifier: random_b64(32)?,
            started_ms: now_ms,
        })
    }

    /// Whether a callback carrying `state` at `now_ms` belongs to this
    /// flow: the same state (compared in constant time), within
    /// [`FLOW_TTL_MS`] of the start.
    pub fn accepts(&self, state: &str, now_ms: i64) -> Result<(), &'static str> {
        if !crate::identity::secrets_equal(&self.state, state) {
            return Err("the sign-in's state does not match; start again");
        }
        if now_ms - self.started_ms > FLOW_TTL_MS {
            return Err("the sign-in took too long; start again");
        }
        Ok(())
    }

    /// The cookie value: the four parts joined by dots.
    pub fn to_cookie(&self) -> String {
        format!(
            "{}.{}.{}.{}",
            self.state, self.nonce, self.verifier, self.started_ms
        )
    }

    pub fn from_cookie(v: &str) -> Option<Flow> {
        let mut p = v.split('.');
        let flow = Flow {
            state: p.next()?.to_owned(),
            nonce: p.next()?.to_owned(),
            verifier: p.next()?.to_owned(),
            started_ms: p.next()?.parse().ok()?,
        };
        let ok = p.next().is_none()
            && [&flow.state, &flow.nonce, &flow.verifier]
                .iter()
                .all(|s| s.len() == 43);
        ok.then_some(flow)
    }
}

impl SignIn {
    /// Checks the configuration and reads the client secret.
    pub fn new(config: SignInConfig) -> Result<SignIn, OidcError> {
        for (what, url) in [
            ("authorization_endpoint", &config.authorization_endpoint),
            ("token_endpoint", &config.token_endpoint),
            ("redirect_url", &config.redirect_url),
        ] {
            if !secure_url(url) {
                return Err(OidcError(format!(
                    "sign_in.{what} `{url}`: use https:// (http:// only to loopback)"
                )));
            }
        }
        if !config.redirect_url.ends_with("/ui/oidc/callback") {
            return Err(OidcError(format!(
                "sign_in.redirect_url `{}` must be this server's /ui/oidc/callback",
                config.redirect_url
            )));
        }
        if config.client_id.is_empty() {
            return Err(OidcError("sign_in.client_id must not be empty".into()));
        }
        if !config.scopes.iter().any(|s| s == "openid") {
            return Err(OidcError(
                "sign_in.scopes must include `openid`: the page signs in with the ID token".into(),
            ));
        }
        let secret = match (&config.client_secret_file, &config.client_secret_env) {
            (Some(_), Some(_)) => {
                return Err(OidcError(
                    "sign_in: give client_secret_file or client_secret_env, not both".into(),
                ));
            }
            (Some(f), None) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| OidcError(format!("{}: cannot read: {e}", f.display())))?
                    .trim()
                    .to_owned(),
            ),
            (None, Some(var)) => Some(std::env::var(var).map_err(|_| {
                OidcError(format!("sign_in.client_secret_env: `{var}` is not set"))
            })?),
            (None, None) => None,
        };
        Ok(SignIn { config, secret })
    }

    /// Where the sign-in button sends the browser.
    pub fn authorization_url(&self, flow: &Flow) -> String {
        let c = &self.config;
        let query = serde_urlencoded::to_string([
            ("response_type", "code"),
            ("client_id", c.client_id.as_str()),
            ("redirect_uri", c.redirect_url.as_str()),
            ("scope", &c.scopes.join(" ")),
            ("state", &flow.state),
            ("nonce", &flow.nonce),
            ("code_challenge", &pkce_challenge(&flow.verifier)),
            ("code_challenge_method", "S256"),
        ])
        .unwrap_or_default();
        let sep = if c.authorization_endpoint.contains('?') {
            '&'
        } else {
            '?'
        };
        format!("{}{sep}{query}", c.authorization_endpoint)
    }

    /// Trades the code for the ID token at the token endpoint.
    pub async fn exchange(
        &self,
        client: &reqwest::Client,
        code: &str,
        flow: &Flow,
    ) -> Result<String, OidcError> {
        let c = &self.config;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", c.redirect_url.as_str()),
            ("client_id", c.client_id.as_str()),
            ("code_verifier", flow.verifier.as_str()),
        ];
        if let Some(s) = &self.secret {
            form.push(("client_secret", s.as_str()));
        }
        let body = serde_urlencoded::to_string(&form).unwrap_or_default();
        let resp = client
            .post(&c.token_endpoint)
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| OidcError(format!("the token endpoint cannot be reached: {e}")))?;
        let status = resp.status();
        let v: Value = resp
            .json()
            .await
            .map_err(|_| OidcError(format!("the token endpoint answered {status} without JSON")))?;
        if !status.is_success() {
            let error = v["error"].as_str().unwrap_or("unknown error");
            return Err(OidcError(format!(
                "the token endpoint refused the code: {error}"
            )));
        }
        v["id_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| OidcError("the token endpoint returned no id_token".into()))
    }
}

fn default_refresh() -> u64 {
    300
}
fn default_subject() -> String {
    "sub".into()
}
fn default_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into(), "EdDSA".into()]
}
fn default_leeway() -> u64 {
    30
}

/// A configuration that cannot be used, or a key set that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("oidc: {0}")]
pub struct OidcError(pub String);

/// What a verified token says about its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    pub subject: String,
    pub groups: Vec<String>,
}

/// Verifies tokens of one issuer.
pub struct Verifier {
    config: OidcConfig,
    algorithms: Vec<Algorithm>,
    keys: ArcSwap<JwkSet>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("issuer", &self.config.issuer)
            .finish()
    }
}

fn parse_algorithm(name: &str) -> Result<Algorithm, OidcError> {
    let alg = match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        "HS256" | "HS384" | "HS512" => {
            return Err(OidcError(format!(
                "algorithms: `{name}` is refused: a shared-secret algorithm would let anyone holding the issuer's public key sign tokens"
            )));
        }
        other => {
            return Err(OidcError(format!(
                "algorithms: `{other}` is not one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"
            )));
        }
    };
    Ok(alg)
}

/// Parses a JWKS document; every key must be usable.
pub fn parse_jwks(text: &str, from: &str) -> Result<JwkSet, OidcError> {
    let set: JwkSet =
        serde_json::from_str(text).map_err(|e| OidcError(format!("{from}: not a JWKS: {e}")))?;
    for k in &set.keys {
        DecodingKey::from_jwk(k)
            .map_err(|e| OidcError(format!("{from}: a key cannot be used: {e}")))?;
    }
    Ok(set)
}

impl Verifier {
    /// Checks the configuration and reads the key file (a URL is fetched
    /// by [`Verifier::refresh`]).
    pub fn new(config: OidcConfig) -> Result<Verifier, OidcError> {
        if config.issuer.is_empty() || config.audience.is_empty() {
            return Err(OidcError("issuer and audience must not be empty".into()));
        }
        if config.algorithms.is_empty() {
            return Err(OidcError("algorithms must not be empty".into()));
        }
        let algorithms = config
            .algorithms
            .iter()
            .map(|a| parse_algorithm(a))
            .collect::<Result<Vec<_>, _>>()?;
        let keys = match (&config.jwks_file, &config.jwks_url) {
            (Some(f), None) => {
                let text = std::fs::read_to_string(f)
                    .map_err(|e| OidcError(format!("jwks_file {}: {e}", f.display())))?;
                parse_jwks(&text, &format!("jwks_file {}", f.display()))?
            }
            (None, Some(_)) => JwkSet { keys: vec![] },
            _ => {
                return Err(OidcError(
                    "give exactly one of jwks_file and jwks_url".into(),
                ));
            }
        };
        Ok(Verifier {
            config,
            algorithms,
            keys: ArcSwap::from_pointee(keys),
        })
    }

    pub fn config(&self) -> &OidcConfig {
        &self.config
    }

    /// Fetches the key set from `jwks_url` (a no-op for a file).
    pub async fn refresh(&self, client: &reqwest::Client) -> Result<(), OidcError> {
        let Some(url) = &self.config.jwks_url else {
            return Ok(());
        };
        let resp = client
            .get(url)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| OidcError(format!("jwks_url {url}: {e}")))?;
        if !resp.status().is_success() {
            return Err(OidcError(format!("jwks_url {url}: HTTP {}", resp.status())));
        }
        let text = resp
            .text()
            .await
            .map_err(|e| OidcError(format!("jwks_url {url}: {e}")))?;
        let set = parse_jwks(&text, &format!("jwks_url {url}"))?;
        self.keys.store(Arc::new(set));
        Ok(())
    }

    /// Refreshes the key set from its URL every `jwks_refresh_secs` until
    /// the process ends; a failed refresh keeps the keys in use.
    pub fn keep_fresh(self: &Arc<Self>, client: reqwest::Client) {
        if self.config.jwks_url.is_none() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let every = Duration::from_secs(me.config.jwks_refresh_secs.max(10));
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = me.refresh(&client).await {
                    tracing::warn!(error = %e, "JWKS refresh failed; the keys in use stay");
                }
            }
        });
    }

    /// Whether a bearer value looks like a JWT (three dot-separated parts);
    /// anything else is looked up as a static token.
    pub fn looks_like_jwt(token: &str) -> bool {
        token.split('.').count() == 3 && token.len() > 20
    }

    /// Verifies a bearer token at `now_ms`: signature by a key of the set
    /// (chosen by `kid`), an allowed algorithm, issuer, audience, `exp`
    /// (required) and `nbf` with the leeway.
    pub fn verify(&self, token: &str, now_ms: i64) -> Result<Claims, &'static str> {
        self.verify_for(token, now_ms, &self.config.audience)
            .map(|(c, _)| c)
    }

    /// Verifies the ID token of a page sign-in: as a bearer token, but for
    /// the client id, and carrying the flow's nonce.
    pub fn verify_id_token(
        &self,
        token: &str,
        now_ms: i64,
        client_id: &str,
        nonce: &str,
    ) -> Result<Claims, &'static str> {
        let (claims, all) = self.verify_for(token, now_ms, client_id)?;
        let said = all.get("nonce").and_then(Value::as_str).unwrap_or("");
        if said.is_empty() || !crate::identity::secrets_equal(said, nonce) {
            return Err("the ID token's nonce is not this sign-in's");
        }
        Ok(claims)
    }

    fn verify_for(
        &self,
        token: &str,
        now_ms: i64,
        audience: &str,
    ) -> Result<(Claims, serde_json::Map<String, Value>), &'static str> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "the JWT does not parse")?;
        if !self.algorithms.contains(&header.alg) {
            return Err("the JWT's algorithm is not accepted");
        }
        let keys = self.keys.load();
        let jwk = match &header.kid {
            Some(kid) => keys.find(kid),
            None if keys.keys.len() == 1 => keys.keys.first(),
            None => None,
        }
        .ok_or("the JWT is signed with a key the issuer does not list")?;
        let key = DecodingKey::from_jwk(jwk).map_err(|_| "the issuer's key cannot be used")?;
        let mut v = Validation::new(header.alg);
        v.algorithms = vec![header.alg];
        v.set_issuer(&[&self.config.issuer]);
        v.set_audience(&[audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        // Time is checked below, against the engine's clock.
        v.validate_exp = false;
        v.validate_nbf = false;
        let data = jsonwebtoken::decode::<serde_json::Map<String, Value>>(token, &key, &v)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidIssuer => {
                    "the JWT's issuer is not the configured one"
                }
                jsonwebtoken::errors::ErrorKind::InvalidAudience => {
                    "the JWT's audience is not this server"
                }
                jsonwebtoken::errors::ErrorKind::InvalidSignature => {
                    "the JWT's signature does not verify"
                }
                jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(_) => {
                    "the JWT lacks exp, iss or aud"
                }
                _ => "the JWT does not verify",
            })?;
        let claims = data.claims;
        let now = now_ms.div_euclid(1000);
        let leeway = i64::try_from(self.config.leeway_secs).unwrap_or(i64::MAX);
        let exp = claims
            .get("exp")
            .and_then(Value::as_i64)
            .ok_or("the JWT's exp is not a number")?;
        if now > exp.saturating_add(leeway) {
            return Err("the JWT has expired");
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = nbf.as_i64().ok_or("the JWT's nbf is not a number")?;
            if now < nbf.saturating_sub(leeway) {
                return Err("the JWT is not valid yet");
            }
        }
        let subject = claims
            .get(&self.config.subject_claim)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or("the JWT has no subject claim")?
            .to_owned();
        let groups = match &self.config.groups_claim {
            None => vec![],
            Some(c) => match claims.get(c) {
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .filter(|g| self.config.group_roles.iter().any(|r| r == g))
                    .map(str::to_owned)
                    .collect(),
                _ => vec![],
            },
        };
        Ok((Claims { subject, groups }, claims))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign_in() -> SignInConfig {
        SignInConfig {
            authorization_endpoint: "https://idp.example/authorize".into(),
            token_endpoint: "https://idp.example/token".into(),
            client_id: "gavel".into(),
            redirect_url: "https://gavel.example/ui/oidc/callback".into(),
            client_secret_file: None,
            client_secret_env: None,
            scopes: vec!["openid".into()],
            label: "x".into(),
        }
    }

    #[test]
    fn the_pkce_challenge_is_rfc_7636s() {
        // RFC 7636, appendix B.
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn a_flow_round_trips_through_its_cookie_and_nothing_else_parses() {
        let f = Flow::start(42).unwrap();
        assert_eq!(Flow::from_cookie(&f.to_cookie()), Some(f.clone()));
        assert_ne!(Flow::start(42).unwrap().state, f.state);
        for bad in ["", "a.b.c.1", &format!("{}.x", f.to_cookie()), "x.y.z.w"] {
            assert_eq!(Flow::from_cookie(bad), None, "{bad}");
        }
        assert!(f.accepts(&f.state, 42 + FLOW_TTL_MS).is_ok());
        assert!(f.accepts(&f.state, 43 + FLOW_TTL_MS).is_err(), "too late");
        assert!(f.accepts(&f.nonce, 42).is_err(), "another state");
        let url = SignIn::new(sign_in()).unwrap().authorization_url(&f);
        assert!(url.starts_with("https://idp.example/authorize?response_type=code&"));
        assert!(url.contains(&format!("code_challenge={}", pkce_challenge(&f.verifier))));
        assert!(
            !url.contains(&f.verifier),
            "the verifier never leaves the server"
        );
    }

    #[test]
    fn unsafe_sign_in_configurations_are_refused() {
        let mut c = sign_in();
        c.token_endpoint = "http://idp.example/token".into();
        assert!(SignIn::new(c).unwrap_err().0.contains("https"));
        let mut c = sign_in();
        c.token_endpoint = "http://127.0.0.1:9/token".into();
        assert!(SignIn::new(c).is_ok(), "loopback may be plain HTTP");
        let mut c = sign_in();
        c.redirect_url = "https://gavel.example/elsewhere".into();
        assert!(SignIn::new(c).is_err());
        let mut c = sign_in();
        c.scopes = vec!["profile".into()];
        assert!(SignIn::new(c).is_err());
        let mut c = sign_in();
        c.client_secret_env = Some("GAVEL_TEST_SURELY_UNSET_SECRET".into());
        assert!(SignIn::new(c).unwrap_err().0.contains("not set"));
    }
}
