//! Who is calling: people and agents configured with their roles and every
//! credential they use. Identity comes only from credentials, never from a
//! request body. Tokens are stored as sha256 hashes.

use base64::Engine as _;
use std::collections::BTreeSet;

/// Credentials to identities: the doors' side of identity, with the
/// OIDC and certificate checks (the `server` feature).
#[cfg(feature = "server")]
mod directory;
#[cfg(feature = "server")]
pub use directory::{Directory, DirectoryError, NoCaller};

pub const AGENT: &str = "agent";
pub const EXECUTOR: &str = "executor";
pub const OPERATOR: &str = "operator";
pub const AUDITOR: &str = "auditor";
pub const BREAKGLASS: &str = "breakglass";

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// One person (or agent): distinctness is by this name.
    pub name: String,
    pub roles: BTreeSet<String>,
    /// Requesters this identity acts for (an agent's owner): it may never
    /// approve their jobs.
    pub acts_for: BTreeSet<String>,
    /// The tenants whose jobs this identity works with.
    pub tenants: crate::tenant::Tenants,
}

impl Identity {
    pub fn has(&self, role: &str) -> bool {
        self.roles.contains(role)
    }

    /// Whether this identity works with `tenant`'s jobs.
    pub fn in_tenant(&self, tenant: &str) -> bool {
        self.tenants.includes(tenant)
    }

    /// Approver roles: every role but the built-in ones.
    pub fn approver_roles(&self) -> impl Iterator<Item = &String> {
        self.roles
            .iter()
            .filter(|r| !crate::policy::model::BUILTIN_ROLES.contains(&r.as_str()))
    }
}

/// A token's stored form: `sha256:<64 hex>`.
pub fn token_hash(token: &str) -> String {
    format!("sha256:{}", crate::canonical::sha256_hex(token.as_bytes()))
}

/// A fresh random bearer token (256 bits, URL-safe base64, prefixed `gvl_`).
pub fn new_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!(
        "gvl_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// Compares two secrets (tokens, CSRF tokens, nonces) in time that does
/// not depend on where they differ.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}
