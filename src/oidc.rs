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

    /// Verifies a token at `now_ms`: signature by a key of the set (chosen
    /// by `kid`), an allowed algorithm, issuer, audience, `exp` (required)
    /// and `nbf` with the leeway.
    pub fn verify(&self, token: &str, now_ms: i64) -> Result<Claims, &'static str> {
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
        v.set_audience(&[&self.config.audience]);
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
        Ok(Claims { subject, groups })
    }
}
