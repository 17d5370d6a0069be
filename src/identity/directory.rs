//! The directory: every configured identity, indexed by each credential
//! that names it (token hashes, Slack user ids, certificate subjects, JWT
//! subjects), and the resolution of a request's credentials to one caller.

use super::{Identity, token_hash};
use crate::policy::Person;
use std::collections::{BTreeSet, HashMap};

/// Every configured identity, indexed by credential.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    identities: Vec<Identity>,
    by_token_hash: HashMap<String, usize>,
    by_slack_user: HashMap<String, usize>,
    by_cert_subject: HashMap<String, usize>,
    by_jwt_subject: HashMap<String, usize>,
    /// The OIDC issuer whose JWTs are accepted as bearer tokens.
    oidc: Option<std::sync::Arc<crate::oidc::Verifier>>,
}

/// Why a request names nobody. Each door words the first two in its own
/// terms (a gRPC metadata key, an HTTP header); the rest are said as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoCaller {
    /// Neither a bearer token nor a client certificate.
    NoCredential,
    /// An authorization value that is not `Bearer <token>`.
    NotBearer,
    /// A credential that names nobody, or two credentials that disagree.
    Refused(&'static str),
}

impl From<&'static str> for NoCaller {
    fn from(m: &'static str) -> NoCaller {
        NoCaller::Refused(m)
    }
}

const NOT_BEARER: &str = "the authorization metadata must be `Bearer <token>`";

/// The token in an `Authorization: Bearer <token>` value.
fn bearer_token(value: &str) -> Result<&str, &'static str> {
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .ok_or(NOT_BEARER)
}

/// The kinds of credential indexed besides tokens.
#[derive(Clone, Copy)]
enum Handle {
    Slack,
    Cert,
    Jwt,
}

impl Handle {
    fn what(self) -> &'static str {
        match self {
            Handle::Slack => "Slack user id",
            Handle::Cert => "certificate subject",
            Handle::Jwt => "JWT subject",
        }
    }
}

/// A configuration mistake in the identities.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("identities: {0}")]
pub struct DirectoryError(pub String);

impl Directory {
    /// Builds the directory: names unique, token hashes well-formed and
    /// unique across people (one credential never names two people).
    pub fn new(entries: Vec<(Identity, Vec<String>)>) -> Result<Directory, DirectoryError> {
        let mut d = Directory::default();
        let mut names = BTreeSet::new();
        for (identity, tokens) in entries {
            if identity.name.is_empty() {
                return Err(DirectoryError("an identity has an empty name".into()));
            }
            if !names.insert(identity.name.clone()) {
                return Err(DirectoryError(format!(
                    "`{}` is configured twice; list every credential of one person under one identity",
                    identity.name
                )));
            }
            let idx = d.identities.len();
            for t in tokens {
                let hex = t.strip_prefix("sha256:").unwrap_or("");
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(DirectoryError(format!(
                        "`{}`: token `{t}` is not `sha256:<64 hex>` (store the hash, never the token; `gavel token new` prints both)",
                        identity.name
                    )));
                }
                let key = format!("sha256:{}", hex.to_ascii_lowercase());
                if d.by_token_hash.insert(key, idx).is_some() {
                    return Err(DirectoryError(format!(
                        "a token of `{}` is also configured for someone else",
                        identity.name
                    )));
                }
            }
            d.identities.push(identity);
        }
        Ok(d)
    }

    /// The identity an `Authorization: Bearer <token>` value names, for
    /// every door that carries one: `Err` when the value is not of that
    /// form, `Ok(None)` for a token nobody holds.
    pub fn by_authorization(&self, value: &str) -> Result<Option<&Identity>, &'static str> {
        Ok(self.by_token(bearer_token(value)?))
    }

    /// The identity a bearer token belongs to.
    pub fn by_token(&self, token: &str) -> Option<&Identity> {
        self.by_token_hash
            .get(&token_hash(token))
            .map(|&i| &self.identities[i])
    }

    /// Adds each person's Slack user ids (`slack_user_ids`), so an
    /// approval from Slack counts as the same person as from any door.
    pub fn with_slack_users(
        mut self,
        ids: Vec<(String, Vec<String>)>,
    ) -> Result<Directory, DirectoryError> {
        self.index(Handle::Slack, ids)?;
        Ok(self)
    }

    /// Adds each person's client certificate subjects (`cert_subjects`):
    /// an RFC 4514 subject (`CN=alice,O=Example`) or an alternative name
    /// (`dns:…`, `uri:…`, `email:…`, `ip:…`).
    pub fn with_cert_subjects(
        mut self,
        subjects: Vec<(String, Vec<String>)>,
    ) -> Result<Directory, DirectoryError> {
        self.index(Handle::Cert, subjects)?;
        Ok(self)
    }

    /// The person a verified client certificate belongs to: its subject or
    /// one of its alternative names is listed under them. `Err` when the
    /// certificate names two different people.
    pub fn by_certificate(
        &self,
        cert: &crate::tls::ClientCert,
    ) -> Result<Option<&Identity>, &'static str> {
        let mut found: Option<usize> = None;
        for h in cert.handles() {
            if let Some(&i) = self.by_cert_subject.get(h) {
                if found.is_some_and(|f| f != i) {
                    return Err("the client certificate names two different identities");
                }
                found = Some(i);
            }
        }
        Ok(found.map(|i| &self.identities[i]))
    }

    /// Adds each person's JWT subjects (`jwt_subjects`): the values of the
    /// configured subject claim that name them.
    pub fn with_jwt_subjects(
        mut self,
        subjects: Vec<(String, Vec<String>)>,
    ) -> Result<Directory, DirectoryError> {
        self.index(Handle::Jwt, subjects)?;
        Ok(self)
    }

    /// Indexes one kind of credential: each value names one person.
    fn index(
        &mut self,
        kind: Handle,
        lists: Vec<(String, Vec<String>)>,
    ) -> Result<(), DirectoryError> {
        for (name, list) in lists {
            let idx = self
                .identities
                .iter()
                .position(|i| i.name == name)
                .ok_or_else(|| DirectoryError(format!("no identity `{name}`")))?;
            let map = match kind {
                Handle::Slack => &mut self.by_slack_user,
                Handle::Cert => &mut self.by_cert_subject,
                Handle::Jwt => &mut self.by_jwt_subject,
            };
            for value in list {
                if value.trim().is_empty() || map.insert(value.clone(), idx).is_some() {
                    return Err(DirectoryError(format!(
                        "{} `{value}` of `{name}` is empty or configured for someone else",
                        kind.what()
                    )));
                }
            }
        }
        Ok(())
    }

    /// Accepts JWTs from this issuer as bearer tokens.
    pub fn with_oidc(mut self, verifier: std::sync::Arc<crate::oidc::Verifier>) -> Directory {
        self.oidc = Some(verifier);
        self
    }

    /// The person a page sign-in's ID token names (verified for the
    /// client id and the flow's nonce). The session gets the identity's
    /// configured roles; groups count only on bearer JWTs.
    pub fn by_id_token(
        &self,
        token: &str,
        now_ms: i64,
        client_id: &str,
        nonce: &str,
    ) -> Result<&Identity, &'static str> {
        let v = self.oidc.as_ref().ok_or("OIDC sign-in is not configured")?;
        let claims = v.verify_id_token(token, now_ms, client_id, nonce)?;
        self.by_jwt_subject
            .get(&claims.subject)
            .map(|&i| &self.identities[i])
            .ok_or("the ID token's subject belongs to no configured identity")
    }

    /// The identity a bearer value names: a JWT of the configured issuer
    /// (its subject listed under a person; roles from allowed groups added)
    /// or a static token.
    fn by_bearer(&self, value: &str, now_ms: i64) -> Result<Identity, NoCaller> {
        let token = bearer_token(value).map_err(|_| NoCaller::NotBearer)?;
        if let Some(v) = &self.oidc
            && crate::oidc::Verifier::looks_like_jwt(token)
        {
            let claims = v.verify(token, now_ms)?;
            let &i = self
                .by_jwt_subject
                .get(&claims.subject)
                .ok_or(NoCaller::Refused(
                    "the JWT's subject belongs to no configured identity",
                ))?;
            let mut who = self.identities[i].clone();
            who.roles.extend(claims.groups);
            return Ok(who);
        }
        self.by_token(token)
            .cloned()
            .ok_or(NoCaller::Refused("unknown token"))
    }

    /// The caller of a request, from its `Authorization` value (a static
    /// token or an OIDC JWT) and its verified client certificate, whichever
    /// it presents. When both are presented they must name the same person.
    pub fn caller(
        &self,
        authorization: Option<&str>,
        cert: Option<&crate::tls::ClientCert>,
        now_ms: i64,
    ) -> Result<Identity, NoCaller> {
        let by_cert = match cert {
            Some(c) => self.by_certificate(c)?,
            None => None,
        };
        match authorization {
            Some(value) => {
                let by_token = self.by_bearer(value, now_ms)?;
                match by_cert {
                    Some(c) if c.name != by_token.name => Err(NoCaller::Refused(
                        "the client certificate and the token name different identities",
                    )),
                    _ => Ok(by_token),
                }
            }
            None => by_cert.cloned().ok_or(match cert {
                Some(_) => {
                    NoCaller::Refused("the client certificate belongs to no configured identity")
                }
                None => NoCaller::NoCredential,
            }),
        }
    }

    /// The person a Slack user id belongs to.
    pub fn by_slack_user(&self, user_id: &str) -> Option<&Identity> {
        self.by_slack_user
            .get(user_id)
            .map(|&i| &self.identities[i])
    }

    /// The identity with this name (a page session names its person).
    pub fn by_name(&self, name: &str) -> Option<&Identity> {
        self.identities.iter().find(|i| i.name == name)
    }

    pub fn identities(&self) -> &[Identity] {
        &self.identities
    }

    pub fn is_empty(&self) -> bool {
        self.identities.is_empty()
    }

    /// The people who could approve, for gate satisfiability checks.
    pub fn people(&self) -> Vec<Person> {
        self.people_in(None)
    }

    /// The people who work in `tenant` (every person for `None`).
    pub fn people_in(&self, tenant: Option<&str>) -> Vec<Person> {
        self.identities
            .iter()
            .filter(|i| tenant.is_none_or(|t| i.in_tenant(t)))
            .map(|i| Person {
                name: i.name.clone(),
                roles: i.approver_roles().cloned().collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::new_token;

    fn id(name: &str) -> Identity {
        Identity {
            name: name.into(),
            roles: BTreeSet::new(),
            acts_for: BTreeSet::new(),
            tenants: Default::default(),
        }
    }

    #[test]
    fn tokens_are_looked_up_by_hash() {
        let t = new_token().unwrap();
        assert!(t.starts_with("gvl_") && t.len() > 40);
        let d = Directory::new(vec![(id("alice"), vec![token_hash(&t)])]).unwrap();
        assert_eq!(d.by_token(&t).unwrap().name, "alice");
        assert!(d.by_token("nope").is_none());
        assert!(
            d.by_token(&token_hash(&t)).is_none(),
            "the hash is not a credential"
        );
    }

    #[test]
    fn configuration_mistakes_are_refused() {
        let h = token_hash("x");
        assert!(
            Directory::new(vec![(id("a"), vec![h.clone()]), (id("b"), vec![h.clone()])]).is_err()
        );
        assert!(Directory::new(vec![(id("a"), vec![]), (id("a"), vec![])]).is_err());
        assert!(Directory::new(vec![(id("a"), vec!["plain-token".into()])]).is_err());
        assert!(Directory::new(vec![(id(""), vec![])]).is_err());
    }
}
