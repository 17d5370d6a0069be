//! What the approver page needs beyond the API: sessions (a browser signs
//! in once with a token and then carries only a cookie) and a person's own
//! review statistics. Sessions live in the store so every replica honours
//! them; the store keeps only the sha256 of each session's secret.

use super::access::oversees_approvals;
use super::{Engine, store_refusal};
use crate::approval::JobState;
use crate::canonical::sha256_hex;
use crate::identity::Identity;
use crate::identity::{AUDITOR, OPERATOR};
use crate::refusal::{Reason, Refusal};
use crate::store::{DeliveryRow, JobFilter, SessionRow};

/// A page session as the browser holds it.
#[derive(Debug, Clone)]
pub struct Session {
    /// The cookie's value: 32 random bytes, hex. Never stored.
    pub secret: String,
    pub identity: Identity,
    pub expires_at: i64,
}

impl Session {
    /// The CSRF token forms of this session carry: derived from the secret,
    /// so it needs no storage and differs for every session.
    pub fn csrf(&self) -> String {
        csrf_for(&self.secret)
    }
}

fn csrf_for(secret: &str) -> String {
    sha256_hex(format!("gavel-csrf\0{secret}").as_bytes())
}

/// Whether `token` is the CSRF token of the session whose secret is given,
/// compared in constant time.
pub fn csrf_matches(secret: &str, token: &str) -> bool {
    crate::identity::secrets_equal(&csrf_for(secret), token)
}

fn signed_out() -> Refusal {
    Refusal::new(
        Reason::Unauthenticated,
        "not signed in, or the session has ended: sign in again",
    )
}

/// A person's review activity over a window.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReviewStats {
    pub approvals: u64,
    pub rejections: u64,
    /// From the job's creation to this person's approval or rejection.
    pub median_review_ms: Option<i64>,
    /// The window's start.
    pub since: i64,
}

/// The most jobs read for one person's statistics.
const STATS_SCAN_LIMIT: usize = 20_000;

impl Engine {
    /// Signs a browser in with a bearer token; the session lasts the
    /// configured time.
    pub async fn sign_in(&self, token: &str) -> Result<Session, Refusal> {
        let identity = self
            .directory
            .by_token(token.trim())
            .cloned()
            .ok_or_else(|| Refusal::field(Reason::Unauthenticated, "token", "unknown token"))?;
        self.open_session(identity, "token").await
    }

    /// Signs a browser in with the ID token of an OIDC sign-in, checked
    /// against the engine's clock, the client id and the flow's nonce.
    pub async fn sign_in_with_id_token(
        &self,
        id_token: &str,
        client_id: &str,
        nonce: &str,
    ) -> Result<Session, Refusal> {
        let identity = self
            .directory
            .by_id_token(id_token, self.now(), client_id, nonce)
            .cloned()
            .map_err(|m| Refusal::new(Reason::Unauthenticated, m))?;
        self.open_session(identity, "oidc").await
    }

    async fn open_session(&self, identity: Identity, how: &str) -> Result<Session, Refusal> {
        let secret = crate::identity::new_token().map_err(|e| {
            tracing::error!(error = %e, "no randomness for a session");
            Refusal::new(Reason::Unavailable, "cannot create a session right now")
        })?;
        let secret = secret.trim_start_matches("gvl_").to_owned();
        let now = self.now();
        let expires_at = now.saturating_add(self.options.session_ttl_ms);
        self.store
            .create_session(SessionRow {
                id_hash: sha256_hex(secret.as_bytes()),
                identity: identity.name.clone(),
                created_at: now,
                expires_at,
            })
            .await
            .map_err(store_refusal)?;
        tracing::info!(identity = %identity.name, how, "page sign-in");
        Ok(Session {
            secret,
            identity,
            expires_at,
        })
    }

    /// The session a cookie carries, with its person as configured now (a
    /// person removed from the configuration is signed out).
    pub async fn session(&self, secret: &str) -> Result<Session, Refusal> {
        if secret.is_empty() || secret.len() > 128 {
            return Err(signed_out());
        }
        let row = self
            .store
            .session(&sha256_hex(secret.as_bytes()), self.now())
            .await
            .map_err(store_refusal)?
            .ok_or_else(signed_out)?;
        let identity = self
            .directory
            .by_name(&row.identity)
            .cloned()
            .ok_or_else(signed_out)?;
        Ok(Session {
            secret: secret.to_owned(),
            identity,
            expires_at: row.expires_at,
        })
    }

    pub async fn sign_out(&self, secret: &str) -> Result<(), Refusal> {
        self.store
            .end_session(&sha256_hex(secret.as_bytes()))
            .await
            .map_err(store_refusal)
    }

    /// Drops expired sessions (the sweeper calls this).
    pub async fn purge_sessions(&self) -> Result<u64, Refusal> {
        self.store
            .purge_sessions(self.now())
            .await
            .map_err(store_refusal)
    }

    /// Notification deliveries, newest first, in one state (`""`: all):
    /// operators and auditors watch for dead letters here.
    pub async fn deliveries(
        &self,
        who: &Identity,
        state: &str,
        limit: u32,
    ) -> Result<Vec<DeliveryRow>, Refusal> {
        if !(who.has(OPERATOR) || who.has(AUDITOR)) {
            return Err(Refusal::new(
                Reason::PermissionDenied,
                format!(
                    "`{}` may not read the outbox (operator or auditor)",
                    who.name
                ),
            ));
        }
        if !matches!(state, "" | "pending" | "delivered" | "dead") {
            return Err(Refusal::field(
                Reason::InvalidArgument,
                "state",
                "one of pending, delivered, dead",
            ));
        }
        let limit = i64::from(limit.clamp(1, 500));
        let mut rows = self
            .store
            .deliveries(state, limit)
            .await
            .map_err(store_refusal)?;
        // Another tenant's messages are not shown (nor counted).
        rows.retain(|d| who.in_tenant(&d.message.tenant));
        Ok(rows)
    }

    /// The caller's own approvals and rejections of jobs created in the
    /// last `window_ms`.
    pub async fn review_stats(
        &self,
        who: &Identity,
        window_ms: i64,
    ) -> Result<ReviewStats, Refusal> {
        if !oversees_approvals(who) {
            return Err(Refusal::new(
                Reason::PermissionDenied,
                format!("`{}` holds no approver role", who.name),
            ));
        }
        let since = self.now().saturating_sub(window_ms);
        let mut stats = ReviewStats {
            since,
            ..ReviewStats::default()
        };
        let mut times = Vec::new();
        let mut cursor = Some((since - 1, String::new()));
        let mut seen = 0;
        loop {
            let batch = self
                .store
                .jobs(&JobFilter {
                    states: vec![],
                    tenant: None,
                    after: cursor.clone(),
                    limit: 500,
                    unacknowledged_overrides: false,
                })
                .await
                .map_err(store_refusal)?;
            let done = batch.len() < 500;
            for r in batch {
                seen += 1;
                cursor = Some((r.created_at, r.job_id.clone()));
                if !who.in_tenant(&r.tenant) {
                    continue;
                }
                if let Some(a) = r.approvals.iter().find(|a| a.approver == who.name) {
                    stats.approvals += 1;
                    times.push(a.at - r.created_at);
                } else if r.state == JobState::Rejected
                    && r.resolved_by.as_deref() == Some(who.name.as_str())
                {
                    stats.rejections += 1;
                    times.push(r.updated_at - r.created_at);
                }
            }
            if done || seen >= STATS_SCAN_LIMIT {
                break;
            }
        }
        times.sort_unstable();
        stats.median_review_ms = match times.len() {
            0 => None,
            n if n % 2 == 1 => Some(times[n / 2]),
            n => Some((times[n / 2 - 1] + times[n / 2]) / 2),
        };
        Ok(stats)
    }
}
