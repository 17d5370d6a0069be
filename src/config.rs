//! The server's configuration: a TOML file, each key overridable by a
//! `gavel serve` flag or a `GAVEL_*` environment variable (flags win over
//! the environment, which wins over the file).

use crate::identity::{Directory, DirectoryError, Identity};
use crate::job::Limits;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

/// `gavel.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the gRPC API listens. Loopback unless configured otherwise.
    pub grpc_listen: SocketAddr,
    /// Where the HTTP/JSON API and the approver page listen.
    pub http_listen: SocketAddr,
    /// How long an approver page session lasts, in seconds.
    pub session_ttl_secs: u64,
    /// `sqlite://path/to/gavel.db`.
    pub database_url: String,
    /// Loaded at start when the database has no active snapshot (or with `--policy`).
    pub policy: Option<String>,
    /// This replica's audit chain.
    pub replica_id: String,
    /// How often the sweeper expires and escalates jobs.
    pub sweep_interval_secs: u64,
    /// The Ed25519 key bind receipts are signed with (created if missing).
    /// Replicas share one file.
    pub receipt_key: String,
    pub bind: BindConfig,
    pub limits: Limits,
    pub identities: Vec<IdentityConfig>,
    /// Notification delivery: channels and routes.
    pub notify: crate::notify::NotifyConfig,
    /// TLS on both listeners (and client certificates); plaintext when absent.
    pub tls: Option<crate::tls::TlsConfig>,
    /// JWTs of one OIDC issuer accepted as bearer tokens.
    pub oidc: Option<crate::oidc::OidcConfig>,
    /// `[tenants.<name>]`: the tenants of a multi-tenant installation
    /// (none: single-tenant).
    pub tenants: std::collections::BTreeMap<String, crate::tenant::TenantConfig>,
    /// `[stats]`: when `gavel stats` and the page flag an approver as a
    /// possible rubber stamp.
    pub stats: crate::stats::Thresholds,
    /// `[tracing]`: OTLP export of request spans; off when absent.
    pub tracing: Option<TracingConfig>,
    /// `[audit]`: signed checkpoints of this replica's chain.
    pub audit: AuditConfig,
    /// `[resources]`: per-identity watch streams and request rate.
    pub resources: crate::engine::resources::Resources,
}

/// `[audit]`: where this replica appends signed checkpoints of its chain
/// head (a file outside the database: another disk, a mount that ships
/// it elsewhere); off when `checkpoint_file` is absent.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    pub checkpoint_file: Option<String>,
    /// How often the head is signed (only when it moved), and once more
    /// at shutdown.
    pub checkpoint_interval_secs: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            checkpoint_file: None,
            checkpoint_interval_secs: 300,
        }
    }
}

impl AuditConfig {
    /// The server's settings, when checkpoints are on.
    pub fn options(&self) -> Option<crate::server::CheckpointOptions> {
        self.checkpoint_file
            .as_ref()
            .map(|f| crate::server::CheckpointOptions {
                file: f.into(),
                interval: std::time::Duration::from_secs(self.checkpoint_interval_secs),
            })
    }
}

/// `[tracing]`: where request spans go (OTLP over HTTP, JSON encoding).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    /// The collector's traces URL, e.g. `http://127.0.0.1:4318/v1/traces`.
    pub otlp_endpoint: String,
    /// `service.name` on the spans.
    #[serde(default = "TracingConfig::default_service_name")]
    pub service_name: String,
    /// The share of the traces gavel starts itself (requests without a
    /// sampled `traceparent`) that are recorded, 0 to 1.
    #[serde(default = "TracingConfig::default_sample_ratio")]
    pub sample_ratio: f64,
}

impl TracingConfig {
    fn default_service_name() -> String {
        "gavel".into()
    }

    fn default_sample_ratio() -> f64 {
        1.0
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(format!("tracing.{m}")));
        match reqwest::Url::parse(&self.otlp_endpoint) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
            _ => {
                return invalid(format!(
                    "otlp_endpoint `{}`: use an http:// or https:// URL such as http://127.0.0.1:4318/v1/traces",
                    self.otlp_endpoint
                ));
            }
        }
        if self.service_name.trim().is_empty() {
            return invalid("service_name must not be empty".into());
        }
        if !(0.0..=1.0).contains(&self.sample_ratio) {
            return invalid("sample_ratio must be between 0 and 1".into());
        }
        Ok(())
    }

    /// The exporter's settings.
    pub fn options(&self) -> crate::service::observe::TracingOptions {
        crate::service::observe::TracingOptions {
            endpoint: self.otlp_endpoint.clone(),
            service_name: self.service_name.clone(),
            sample_ratio: self.sample_ratio,
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BindConfig {
    /// Refuse binds with SNAPSHOT_STALE once the job's snapshot is no longer active.
    pub require_active_snapshot: bool,
}

/// One person (or agent) and every credential they use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    pub name: String,
    #[serde(default)]
    pub roles: Vec<String>,
    /// `sha256:<hex>` of each bearer token.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Requesters (agents) this person acts for: they never approve their jobs.
    #[serde(default)]
    pub acts_for: Vec<String>,
    /// This person's Slack user ids (`U…`), for approving in Slack.
    #[serde(default)]
    pub slack_user_ids: Vec<String>,
    /// This person's client certificates, by subject (`CN=alice,O=Example`)
    /// or alternative name (`dns:…`, `uri:…`, `email:…`, `ip:…`).
    #[serde(default)]
    pub cert_subjects: Vec<String>,
    /// The values of the OIDC subject claim (`sub`) that name this person.
    #[serde(default)]
    pub jwt_subjects: Vec<String>,
    /// The tenants whose jobs this identity works with, or `["*"]` for
    /// all; required once tenants are declared, refused before.
    pub tenants: Option<Vec<String>>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            grpc_listen: SocketAddr::from(([127, 0, 0, 1], 50051)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            session_ttl_secs: 8 * 3600,
            database_url: "sqlite://gavel-data/gavel.db".into(),
            policy: Some("policies/default.yaml".into()),
            replica_id: "main".into(),
            sweep_interval_secs: 1,
            receipt_key: "gavel-data/receipt.key".into(),
            bind: BindConfig::default(),
            limits: Limits::default(),
            identities: Vec::new(),
            notify: crate::notify::NotifyConfig::default(),
            tls: None,
            oidc: None,
            tenants: Default::default(),
            stats: crate::stats::Thresholds::default(),
            tracing: None,
            audit: AuditConfig::default(),
            resources: Default::default(),
        }
    }
}

/// A configuration that cannot be used, saying where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error(transparent)]
    Directory(#[from] DirectoryError),
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML file; unknown keys are errors.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Config::from_toml(&text, &shown)
    }

    pub fn from_toml(text: &str, shown: &str) -> Result<Config, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: shown.to_owned(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.replica_id.is_empty()
            || !self
                .replica_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(ConfigError::Invalid(format!(
                "replica_id `{}`: use 1 or more characters of [A-Za-z0-9._-]",
                self.replica_id
            )));
        }
        if self.stats.min_approvals == 0 || self.stats.max_median_review_secs == 0 {
            return Err(ConfigError::Invalid(
                "stats.min_approvals and stats.max_median_review_secs must be at least 1".into(),
            ));
        }
        if let Some(t) = &self.tracing {
            t.validate()?;
        }
        self.resources.validate().map_err(ConfigError::Invalid)?;
        if self.audit.checkpoint_interval_secs == 0 {
            return Err(ConfigError::Invalid(
                "audit.checkpoint_interval_secs must be at least 1".into(),
            ));
        }
        if self.audit.checkpoint_file.as_deref() == Some("") {
            return Err(ConfigError::Invalid(
                "audit.checkpoint_file must name a file (or be left out)".into(),
            ));
        }
        if self.sweep_interval_secs == 0 {
            return Err(ConfigError::Invalid(
                "sweep_interval_secs must be at least 1".into(),
            ));
        }
        if self.session_ttl_secs < 60 || self.session_ttl_secs > 30 * 24 * 3600 {
            return Err(ConfigError::Invalid(
                "session_ttl_secs must be between 60 and 2592000 (30 days)".into(),
            ));
        }
        if self.limits.max_params_depth == 0 || self.limits.max_params_depth > 100 {
            return Err(ConfigError::Invalid(
                "limits.max_params_depth must be 1-100".into(),
            ));
        }
        Ok(())
    }

    /// The declared tenants.
    pub fn tenancy(&self) -> Result<crate::tenant::Tenancy, ConfigError> {
        crate::tenant::Tenancy::new(self.tenants.clone()).map_err(ConfigError::Invalid)
    }

    /// The identity directory the configuration describes.
    pub fn directory(&self) -> Result<Directory, ConfigError> {
        let tenancy = self.tenancy()?;
        let entries = self
            .identities
            .iter()
            .map(|i| {
                let tenants = tenancy
                    .membership(&i.name, i.tenants.as_deref())
                    .map_err(ConfigError::Invalid)?;
                Ok((
                    Identity {
                        name: i.name.clone(),
                        roles: i.roles.iter().cloned().collect::<BTreeSet<_>>(),
                        acts_for: i.acts_for.iter().cloned().collect(),
                        tenants,
                    },
                    i.tokens.clone(),
                ))
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let slack = self
            .identities
            .iter()
            .map(|i| (i.name.clone(), i.slack_user_ids.clone()))
            .collect();
        let certs = self
            .identities
            .iter()
            .map(|i| (i.name.clone(), i.cert_subjects.clone()))
            .collect();
        let jwts = self
            .identities
            .iter()
            .map(|i| (i.name.clone(), i.jwt_subjects.clone()))
            .collect();
        Ok(Directory::new(entries)?
            .with_slack_users(slack)?
            .with_cert_subjects(certs)?
            .with_jwt_subjects(jwts)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let c = Config::from_toml(
            r#"
grpc_listen = "127.0.0.1:50051"
database_url = "sqlite://gavel-data/gavel.db"
policy = "policies/default.yaml"
[[identities]]
name = "alice"
roles = ["reviewer", "finance"]
tokens = ["sha256:0000000000000000000000000000000000000000000000000000000000000000"]
"#,
            "gavel.toml",
        )
        .unwrap();
        assert_eq!(c.identities[0].name, "alice");
        assert_eq!(c.directory().unwrap().identities().len(), 1);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused() {
        let e = Config::from_toml("grpc_lisen = \"x\"\n", "gavel.toml").unwrap_err();
        assert!(e.to_string().starts_with("gavel.toml: "), "{e}");
        assert!(e.to_string().contains("grpc_lisen"), "{e}");
        assert!(Config::from_toml("grpc_listen = \"nowhere\"\n", "g").is_err());
        assert!(Config::from_toml("replica_id = \"a b\"\n", "g").is_err());
        // [stats] thresholds: read, and refused when they could never flag.
        let c = Config::from_toml("[stats]\nmin_approvals = 50\n", "g").unwrap();
        assert_eq!(c.stats.min_approvals, 50);
        assert_eq!(c.stats.max_median_review_secs, 30);
        assert!(Config::from_toml("[stats]\nmax_median_review_secs = 0\n", "g").is_err());
        assert!(Config::from_toml("[stats]\nmin_approval = 5\n", "g").is_err());
        // [tracing]: off unless configured; an endpoint that is not an
        // http(s) URL, or a ratio outside 0..1, is refused.
        assert!(Config::default().tracing.is_none());
        let c = Config::from_toml(
            "[tracing]\notlp_endpoint = \"http://127.0.0.1:4318/v1/traces\"\n",
            "g",
        )
        .unwrap();
        let t = c.tracing.unwrap();
        assert_eq!((t.service_name.as_str(), t.sample_ratio), ("gavel", 1.0));
        for bad in [
            "otlp_endpoint = \"127.0.0.1:4318\"",
            "otlp_endpoint = \"grpc://collector:4317\"",
            "otlp_endpoint = \"http://c/v1/traces\"\nsample_ratio = 1.5",
            "otlp_endpoint = \"http://c/v1/traces\"\nservice_name = \" \"",
            "otlp_endpoint = \"http://c/v1/traces\"\nheaders = 1",
        ] {
            let text = format!("[tracing]\n{bad}\n");
            assert!(Config::from_toml(&text, "g").is_err(), "{bad}");
        }
        let c = Config::from_toml("[[identities]]\nname = \"a\"\ntokens = [\"secret\"]\n", "g")
            .unwrap();
        assert!(c.directory().is_err(), "plain tokens are refused");
    }

    #[test]
    fn tls_and_certificate_subjects_parse_and_collide_loudly() {
        let c = Config::from_toml(
            r#"
[tls]
cert = "/etc/gavel/server.pem"
key = "/etc/gavel/server.key"
client_ca = "/etc/gavel/clients-ca.pem"
require_client_cert = true
[[identities]]
name = "alice"
roles = ["reviewer"]
cert_subjects = ["CN=alice,O=Example", "dns:alice.example"]
"#,
            "gavel.toml",
        )
        .unwrap();
        let tls = c.tls.as_ref().unwrap();
        assert!(tls.require_client_cert);
        assert_eq!(
            tls.client_ca.as_deref(),
            Some(Path::new("/etc/gavel/clients-ca.pem"))
        );
        let d = c.directory().unwrap();
        let cert = crate::tls::ClientCert {
            subject: "CN=someone,O=Example".into(),
            names: vec!["dns:alice.example".into()],
        };
        assert_eq!(d.by_certificate(&cert).unwrap().unwrap().name, "alice");
        assert!(
            Config::from_toml(
                "[tls]
cert = \"a\"\n",
                "g"
            )
            .is_err(),
            "key is required"
        );
        let twice = Config::from_toml(
            "[[identities]]\nname = \"a\"\ncert_subjects = [\"CN=x\"]\n[[identities]]\nname = \"b\"\ncert_subjects = [\"CN=x\"]\n",
            "g",
        )
        .unwrap();
        assert!(twice.directory().is_err(), "one subject, two people");
    }
}
