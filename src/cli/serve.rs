//! `gavel serve`, `gavel migrate` and `gavel token new`.

use super::{CliError, Output, print_json};
use crate::clock::SystemClock;
use crate::config::{Config, IdentityConfig};
use crate::engine::{Engine, EngineOptions, EngineSettings, InitialPolicy};
use crate::identity::{self, AGENT, AUDITOR, BREAKGLASS, EXECUTOR, OPERATOR};
use crate::policy;
use crate::server::{ServeOptions, serve_all, shutdown_signal};
use crate::service::http::HttpOptions;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Configuration file (TOML). Every key can be overridden by the flags below.
    #[arg(long, env = "GAVEL_CONFIG")]
    pub config: Option<PathBuf>,
    /// Where the gRPC API listens.
    #[arg(long, env = "GAVEL_GRPC_LISTEN")]
    pub grpc_listen: Option<SocketAddr>,
    /// Where the HTTP/JSON API and the approver page listen.
    #[arg(long, env = "GAVEL_HTTP_LISTEN")]
    pub http_listen: Option<SocketAddr>,
    /// `sqlite://path/to/gavel.db`.
    #[arg(long, env = "GAVEL_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Load and activate this policy at start (otherwise the configured
    /// policy is loaded only when the database has no active snapshot).
    #[arg(long, env = "GAVEL_POLICY")]
    pub policy: Option<PathBuf>,
    /// This replica's audit chain.
    #[arg(long, env = "GAVEL_REPLICA_ID")]
    pub replica_id: Option<String>,
    /// Seconds between sweeps for expiry and escalation.
    #[arg(long, env = "GAVEL_SWEEP_INTERVAL_SECS")]
    pub sweep_interval_secs: Option<u64>,
    /// Refuse binds with SNAPSHOT_STALE once the job's snapshot is no longer active.
    #[arg(long, env = "GAVEL_BIND_REQUIRE_ACTIVE_SNAPSHOT")]
    pub bind_require_active_snapshot: Option<bool>,
    /// The Ed25519 key file bind receipts are signed with (created if missing).
    #[arg(long, env = "GAVEL_RECEIPT_KEY")]
    pub receipt_key: Option<String>,
    /// Largest accepted job, in bytes.
    #[arg(long, env = "GAVEL_LIMITS_MAX_REQUEST_BYTES")]
    pub limits_max_request_bytes: Option<usize>,
    /// Deepest nesting inside a job's params.
    #[arg(long, env = "GAVEL_LIMITS_MAX_PARAMS_DEPTH")]
    pub limits_max_params_depth: Option<usize>,
    /// Most attributes per job.
    #[arg(long, env = "GAVEL_LIMITS_MAX_ATTRIBUTES")]
    pub limits_max_attributes: Option<usize>,
    /// Most risk tags per job.
    #[arg(long, env = "GAVEL_LIMITS_MAX_RISK_TAGS")]
    pub limits_max_risk_tags: Option<usize>,
    /// Longest string outside params, in bytes.
    #[arg(long, env = "GAVEL_LIMITS_MAX_STRING_BYTES")]
    pub limits_max_string_bytes: Option<usize>,
    /// Development mode: loopback only, SQLite under --data-dir,
    /// policies/default.yaml, and throwaway identities whose tokens are
    /// printed and written to DATA_DIR/dev-identities.json.
    #[arg(long)]
    pub dev: bool,
    /// Data directory for --dev.
    #[arg(long, default_value = "gavel-data")]
    pub data_dir: PathBuf,
    /// Log format (logs go to stderr; RUST_LOG filters them).
    #[arg(long, env = "GAVEL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Logs to stderr through a batching writer thread (`logsink`), colour
/// only on a terminal. The returned flusher writes what is left when the
/// server ends; without a thread, lines go straight to stderr.
fn init_logs(format: LogFormat) -> Option<super::logsink::Flusher> {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi);
    match super::logsink::start(Box::new(std::io::stderr())) {
        Ok((sink, flusher)) => {
            let builder = builder.with_writer(sink);
            let _ = match format {
                LogFormat::Json => builder.json().try_init(),
                LogFormat::Text => builder.try_init(),
            };
            Some(flusher)
        }
        Err(_) => {
            let builder = builder.with_writer(std::io::stderr);
            let _ = match format {
                LogFormat::Json => builder.json().try_init(),
                LogFormat::Text => builder.try_init(),
            };
            None
        }
    }
}

/// Approver roles a policy's gates use.
fn approver_roles(source: &str, file: &str) -> Result<BTreeSet<String>, CliError> {
    policy::approver_roles(source, file).map_err(|e| {
        CliError(
            e.findings
                .iter()
                .map(|f| f.to_string())
                .collect::<Vec<_>>()
                .join("\n"),
        )
    })
}

/// Dev identities: tokens kept in DIR/dev-identities.json across restarts,
/// roles refreshed from the policy.
fn dev_identities(
    dir: &Path,
    approver_roles: &BTreeSet<String>,
) -> Result<Vec<(String, String, Vec<String>)>, CliError> {
    let path = dir.join("dev-identities.json");
    let old: serde_json::Value = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null);
    let old_token = |name: &str| -> Option<String> {
        old["identities"]
            .as_array()?
            .iter()
            .find(|i| i["name"] == name)?["token"]
            .as_str()
            .map(str::to_owned)
    };
    let approvers: Vec<String> = approver_roles.iter().cloned().collect();
    let people: Vec<(&str, Vec<String>)> = vec![
        ("dev-agent", vec![AGENT.into()]),
        ("dev-executor", vec![EXECUTOR.into()]),
        ("alice", approvers.clone()),
        ("bob", approvers.clone()),
        ("carol", approvers),
        ("dev-operator", vec![OPERATOR.into()]),
        ("dev-auditor", vec![AUDITOR.into()]),
        ("dev-breakglass", vec![BREAKGLASS.into()]),
    ];
    let mut out = Vec::new();
    for (name, roles) in people {
        let token = match old_token(name) {
            Some(t) => t,
            None => identity::new_token()
                .map_err(|e| CliError(format!("no randomness for tokens: {e}")))?,
        };
        out.push((name.to_owned(), token, roles));
    }
    let file = json!({
        "identities": out.iter().map(|(n, t, r)| json!({ "name": n, "token": t, "roles": r })).collect::<Vec<_>>(),
    });
    let text = serde_json::to_string_pretty(&file).map_err(|e| CliError(e.to_string()))?;
    write_private(&path, &text)?;
    Ok(out)
}

/// Writes a file readable by its owner only (it holds tokens).
fn write_private(path: &Path, text: &str) -> Result<(), CliError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .map_err(|e| CliError(format!("{}: cannot write: {e}", path.display())))?;
    f.write_all(text.as_bytes())
        .map_err(|e| CliError(format!("{}: cannot write: {e}", path.display())))
}

fn sqlite_parent(url: &str) -> Option<PathBuf> {
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = path.split('?').next()?;
    Path::new(path).parent().map(Path::to_path_buf)
}

pub async fn run_serve(a: ServeArgs) -> Result<ExitCode, CliError> {
    let _logs = init_logs(a.log_format);
    let mut config = match &a.config {
        Some(p) => Config::from_file(p)?,
        None => Config::default(),
    };
    if let Some(v) = a.grpc_listen {
        config.grpc_listen = v;
    }
    if let Some(v) = a.http_listen {
        config.http_listen = v;
    }
    if let Some(v) = a.database_url.clone() {
        config.database_url = v;
    }
    if let Some(v) = a.replica_id.clone() {
        config.replica_id = v;
    }
    if let Some(v) = a.sweep_interval_secs {
        config.sweep_interval_secs = v;
    }
    if let Some(v) = a.bind_require_active_snapshot {
        config.bind.require_active_snapshot = v;
    }
    if let Some(v) = a.receipt_key.clone() {
        config.receipt_key = v;
    }
    let l = &mut config.limits;
    for (flag, slot) in [
        (a.limits_max_request_bytes, &mut l.max_request_bytes),
        (a.limits_max_params_depth, &mut l.max_params_depth),
        (a.limits_max_attributes, &mut l.max_attributes),
        (a.limits_max_risk_tags, &mut l.max_risk_tags),
        (a.limits_max_string_bytes, &mut l.max_string_bytes),
    ] {
        if let Some(v) = flag {
            *slot = v;
        }
    }
    let mut force = false;
    if let Some(p) = &a.policy {
        config.policy = Some(p.display().to_string());
        force = true;
    }
    config.validate()?;
    // Channels, routes and secrets are checked before anything starts.
    config
        .notify
        .channels()
        .map_err(|e| CliError(e.to_string()))?;
    if a.dev {
        for addr in [config.grpc_listen, config.http_listen] {
            if !addr.ip().is_loopback() {
                return Err(CliError(format!(
                    "--dev listens on loopback only, not {addr}; drop --dev and configure identities to listen elsewhere"
                )));
            }
        }
        if !config.identities.is_empty() {
            return Err(CliError(
                "--dev makes its own identities; do not combine it with configured ones".into(),
            ));
        }
    } else if config.identities.is_empty() {
        return Err(CliError(
            "no identities are configured, so nobody could call the server: add [[identities]] to the config (gavel token new makes tokens), or use --dev".into(),
        ));
    }
    // Read once, before anything is created on disk: dev mode takes its
    // approver roles from it and the engine activates it.
    let initial = match &config.policy {
        Some(p) => Some(InitialPolicy {
            source: super::read_text(Path::new(p), super::MAX_POLICY_BYTES)?,
            file: p.clone(),
            force,
        }),
        None => None,
    };

    let mut dev_tokens = Vec::new();
    if a.dev {
        std::fs::create_dir_all(&a.data_dir)
            .map_err(|e| CliError(format!("{}: cannot create: {e}", a.data_dir.display())))?;
        if a.database_url.is_none() {
            config.database_url = format!("sqlite://{}", a.data_dir.join("gavel.db").display());
        }
        if a.receipt_key.is_none() {
            config.receipt_key = a.data_dir.join("receipt.key").display().to_string();
        }
        let roles = match &initial {
            Some(p) => approver_roles(&p.source, &p.file)?,
            None => {
                let file = "policies/default.yaml";
                approver_roles(
                    &super::read_text(Path::new(file), super::MAX_POLICY_BYTES)?,
                    file,
                )?
            }
        };
        dev_tokens = dev_identities(&a.data_dir, &roles)?;
        // Development identities work in every declared tenant.
        let tenants = (!config.tenants.is_empty()).then(|| vec![crate::tenant::ALL.to_owned()]);
        config.identities = dev_tokens
            .iter()
            .map(|(name, token, roles)| IdentityConfig {
                name: name.clone(),
                roles: roles.clone(),
                tokens: vec![identity::token_hash(token)],
                acts_for: vec![],
                slack_user_ids: vec![],
                cert_subjects: vec![],
                jwt_subjects: vec![],
                tenants: tenants.clone(),
            })
            .collect();
    }
    let mut directory = config.directory()?;
    if let Some(oidc) = &config.oidc {
        let verifier = Arc::new(
            crate::oidc::Verifier::new(oidc.clone()).map_err(|e| CliError(e.to_string()))?,
        );
        let client = crate::notify::outbound_client()
            .map_err(|e| CliError(format!("cannot build the HTTP client: {e}")))?;
        // A key set that cannot be fetched at start stops the start: no
        // token could be verified.
        verifier
            .refresh(&client)
            .await
            .map_err(|e| CliError(e.to_string()))?;
        verifier.keep_fresh(client);
        directory = directory.with_oidc(verifier);
    }

    if let Some(parent) = sqlite_parent(&config.database_url)
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(&parent)
            .map_err(|e| CliError(format!("{}: cannot create: {e}", parent.display())))?;
    }
    let store = crate::store::open_with(
        &config.database_url,
        &config.replica_id,
        config.resources.store_options(),
    )
    .await
    .map_err(|e| CliError(e.to_string()))?;
    let engine = Engine::start(EngineSettings {
        store,
        clock: Arc::new(SystemClock),
        directory,
        signer: crate::receipt::ReceiptSigner::load_or_create(Path::new(&config.receipt_key))?,
        policy: initial,
        options: EngineOptions {
            limits: config.limits.clone(),
            require_active_snapshot: config.bind.require_active_snapshot,
            session_ttl_ms: (config.session_ttl_secs as i64).saturating_mul(1000),
            tenancy: config.tenancy().map_err(|e| CliError(e.to_string()))?,
            replica_id: config.replica_id.clone(),
            stats: config.stats,
            resources: config.resources,
        },
    })
    .await
    .map_err(|e| CliError(e.to_string()))?;

    // --dev stays plaintext on loopback; otherwise TLS when configured.
    let tls = match (&config.tls, a.dev) {
        (Some(files), false) => {
            Some(crate::tls::Tls::load(files.clone()).map_err(|e| CliError(e.to_string()))?)
        }
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(config.grpc_listen)
        .await
        .map_err(|e| CliError(format!("cannot listen on {}: {e}", config.grpc_listen)))?;
    let addr = listener.local_addr().map_err(|e| CliError(e.to_string()))?;
    let http_listener = tokio::net::TcpListener::bind(config.http_listen)
        .await
        .map_err(|e| CliError(format!("cannot listen on {}: {e}", config.http_listen)))?;
    let http_addr = http_listener
        .local_addr()
        .map_err(|e| CliError(e.to_string()))?;
    let snapshot = engine
        .active()
        .map(|s| s.id.to_string())
        .unwrap_or_default();
    if a.dev {
        eprintln!();
        eprintln!(
            "  gavel is running in DEV MODE: loopback only, throwaway identities. Never use this in production."
        );
        eprintln!("  data:      {}", a.data_dir.display());
        eprintln!(
            "  tokens:    {}",
            a.data_dir.join("dev-identities.json").display()
        );
        for (name, token, roles) in &dev_tokens {
            eprintln!("    {name:<15} {token}  ({})", roles.join(", "));
        }
        eprintln!("  page:      http://{http_addr}/ui/  (sign in with one of the tokens above)");
        eprintln!("  api:       http://{http_addr}/api/v1/  (Authorization: Bearer <token>)");
        eprintln!();
    }
    say!("gavel listening on {addr} (gRPC) and {http_addr} (HTTP), policy {snapshot}");
    if let Some(t) = &tls {
        let certs = match (t.asks_client_cert(), t.requires_client_cert()) {
            (_, true) => "required",
            (true, false) => "accepted",
            (false, false) => "not asked for",
        };
        say!("TLS on both listeners; client certificates {certs}");
    }
    tracing::info!(%addr, %http_addr, %snapshot, replica = %config.replica_id, "serving");
    // Page sign-in through the issuer: checked and its secret read at
    // start, so a broken configuration stops the start.
    let sign_in = match config.oidc.as_ref().and_then(|o| o.sign_in.clone()) {
        Some(s) => Some(Arc::new(
            crate::oidc::SignIn::new(s).map_err(|e| CliError(e.to_string()))?,
        )),
        None => None,
    };
    let slack_app = match &config.notify.slack {
        Some(s) => Some(s.app().map_err(|e| CliError(e.to_string()))?),
        None => None,
    };
    let notifier =
        crate::notify::Notifier::new(engine.clone(), config.notify.clone(), &config.replica_id)
            .map_err(|e| CliError(e.to_string()))?;
    if let Some(active) = engine.active() {
        notifier
            .check_ladders(active.policy.doc())
            .map_err(|e| CliError(e.to_string()))?;
    }
    // Without channels there is nothing to deliver: no worker.
    let notifier = (!config.notify.channels.is_empty()).then_some(notifier);
    serve_all(
        engine,
        listener,
        Some((
            http_listener,
            HttpOptions {
                max_body_bytes: config.limits.max_request_bytes + 64 * 1024,
                slack: slack_app,
                oidc: sign_in,
                secure_cookies: tls.is_some(),
                ..HttpOptions::default()
            },
        )),
        notifier,
        ServeOptions {
            sweep_interval: Duration::from_secs(config.sweep_interval_secs),
            max_message_bytes: config.limits.max_request_bytes + 64 * 1024,
            tls,
            tracing: config.tracing.as_ref().map(|t| t.options()),
            checkpoints: config.audit.options(),
        },
        shutdown_signal(),
    )
    .await
    .map_err(|e| CliError(e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct MigrateArgs {
    #[arg(
        long,
        env = "GAVEL_DATABASE_URL",
        default_value = "sqlite://gavel-data/gavel.db"
    )]
    pub database_url: String,
}

pub async fn run_migrate(a: MigrateArgs, output: Output) -> Result<ExitCode, CliError> {
    if let Some(parent) = sqlite_parent(&a.database_url)
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(&parent)
            .map_err(|e| CliError(format!("{}: cannot create: {e}", parent.display())))?;
    }
    crate::store::open(&a.database_url, "main")
        .await
        .map_err(|e| CliError(e.to_string()))?;
    match output {
        Output::Json => print_json(&json!({ "migrated": a.database_url })),
        Output::Text => say!("{}: migrations applied", a.database_url),
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand, Debug)]
pub enum OutboxCommand {
    /// Notification deliveries, newest first, read from the database
    /// (run it where the server's database is reachable).
    List {
        #[arg(
            long,
            env = "GAVEL_DATABASE_URL",
            default_value = "sqlite://gavel-data/gavel.db"
        )]
        database_url: String,
        /// pending, delivered or dead (the dead letters).
        #[arg(long, value_parser = ["pending", "delivered", "dead"])]
        state: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

pub async fn run_outbox(cmd: OutboxCommand, output: Output) -> Result<ExitCode, CliError> {
    let OutboxCommand::List {
        database_url,
        state,
        limit,
    } = cmd;
    let store = crate::store::open(&database_url, "main")
        .await
        .map_err(|e| CliError(e.to_string()))?;
    let rows = store
        .deliveries(
            state.as_deref().unwrap_or(""),
            i64::from(limit.clamp(1, 10_000)),
        )
        .await
        .map_err(|e| CliError(e.to_string()))?;
    match output {
        Output::Json => print_json(&json!({
            "deliveries": rows
                .iter()
                .map(crate::service::http::api::delivery_doc)
                .collect::<Vec<_>>(),
        })),
        Output::Text => {
            if rows.is_empty() {
                say!("no deliveries");
            }
            for d in &rows {
                say!(
                    "{:<9} {:<10} {:<12} tries {:<2} {}{}",
                    d.state,
                    d.message.kind.as_str(),
                    d.channel,
                    d.attempts,
                    d.message.id,
                    d.last_error
                        .as_deref()
                        .map(|e| format!("  ({e})"))
                        .unwrap_or_default()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Print a fresh random bearer token and the `sha256:` line to configure.
    New,
    /// Print the token of a `gavel serve --dev` identity.
    Dev {
        /// dev-agent, dev-executor, alice, bob, carol, dev-operator, dev-auditor or dev-breakglass.
        name: String,
        #[arg(long, default_value = "gavel-data")]
        data_dir: PathBuf,
    },
}

pub fn run_token(cmd: TokenCommand, output: Output) -> Result<ExitCode, CliError> {
    match cmd {
        TokenCommand::New => {
            let token =
                identity::new_token().map_err(|e| CliError(format!("no randomness: {e}")))?;
            let hash = identity::token_hash(&token);
            match output {
                Output::Json => print_json(&json!({ "token": token, "tokens_entry": hash })),
                Output::Text => {
                    say!("token:  {token}");
                    say!("config: tokens = [\"{hash}\"]");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        TokenCommand::Dev { name, data_dir } => {
            let path = data_dir.join("dev-identities.json");
            let bytes = std::fs::read(&path).map_err(|e| {
                CliError(format!(
                    "{}: cannot read ({e}); start `gavel serve --dev` first",
                    path.display()
                ))
            })?;
            let file: serde_json::Value = serde_json::from_slice(&bytes)
                .map_err(|e| CliError(format!("{}: {e}", path.display())))?;
            let token = file["identities"]
                .as_array()
                .and_then(|ids| ids.iter().find(|i| i["name"] == name.as_str()))
                .and_then(|i| i["token"].as_str())
                .ok_or_else(|| CliError(format!("{}: no dev identity `{name}`", path.display())))?;
            match output {
                Output::Json => print_json(&json!({ "name": name, "token": token })),
                Output::Text => say!("{token}"),
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
