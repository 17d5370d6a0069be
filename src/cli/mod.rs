//! The `gavel` command line: argument parsing and output formatting around
//! the core. One file per command group.
//!
//! Exit codes: 0 success, 1 a finding, a failed test or any other error,
//! 2 a usage error (clap's own).

/// Prints a line on stdout, ignoring a closed pipe (`gavel list | head`)
/// instead of panicking like `println!`.
macro_rules! say {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($t)*);
    }};
}

/// Like [`say!`] without the newline.
macro_rules! say_raw {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($t)*);
    }};
}

mod bench;
mod client;
mod gate;
mod hook;
mod job;
mod logsink;
mod mcp_proxy;
mod policy;
mod serve;
mod stats;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::Path;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "gavel",
    version,
    about = "A policy decision point with approval binding for autonomous agents"
)]
struct Cli {
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(flatten)]
    conn: client::Conn,
    #[command(subcommand)]
    command: Command,
}

/// How results are printed.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
pub enum Output {
    /// Human-readable text.
    Text,
    /// One JSON document on stdout.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server.
    Serve(serve::ServeArgs),
    /// Apply database migrations and exit.
    Migrate(serve::MigrateArgs),
    /// Make bearer tokens.
    #[command(subcommand)]
    Token(serve::TokenCommand),
    /// Notification deliveries and dead letters.
    #[command(subcommand)]
    Outbox(serve::OutboxCommand),
    /// Check, hash, explain and test policy files; reload, show, list and
    /// revoke snapshots on a server.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Work with job files.
    #[command(subcommand)]
    Job(job::JobCommand),
    /// Ask the server for a decision on a job (as an agent).
    Decide(client::DecideArgs),
    /// Approve a pending job.
    Approve(client::ApproveArgs),
    /// Reject a pending job.
    Reject(client::ReasonArgs),
    /// Break-glass: approve a pending job or an overridable deny at once.
    Override(client::ReasonArgs),
    /// Acknowledge someone else's break-glass override.
    Acknowledge(client::ReasonArgs),
    /// Withdraw your own pending job.
    Cancel(client::ReasonArgs),
    /// Claim an allowed or approved job to run it (as an executor).
    Bind(client::BindArgs),
    /// Report how a bound job went.
    Report(client::ReportArgs),
    /// Show a job.
    Get {
        job_id: String,
        /// Print only this field of the JSON record (e.g. `policy_snapshot`).
        #[arg(long)]
        field: Option<String>,
    },
    /// Follow a job's state changes until it is final.
    Watch { job_id: String },
    /// The approval queue.
    List(client::ListArgs),
    /// Verify, read and export the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Approval statistics from the audit log: decisions by tier, time to
    /// decision, rejection reasons, expiries, and per approver (with the
    /// rubber-stamp flag).
    Stats(stats::StatsArgs),
    /// Print the public key bind receipts are signed with, as JWKS.
    Keys {
        /// The server's receipt key file.
        #[arg(
            long,
            env = "GAVEL_RECEIPT_KEY",
            default_value = "gavel-data/receipt.key"
        )]
        key_file: std::path::PathBuf,
    },
    /// Check bind receipts offline.
    #[command(subcommand)]
    Receipt(ReceiptCommand),
    /// The load generator.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// A coding agent's pre-tool hook: reads the agent's hook JSON on stdin,
    /// decides (and binds) the tool call, answers in the agent's protocol;
    /// blocks on any failure.
    Hook(hook::HookArgs),
    /// An MCP proxy: every `tools/call` to the upstream server is decided,
    /// approved when required and bound before it is forwarded.
    McpProxy(mcp_proxy::McpProxyArgs),
}

#[derive(Subcommand)]
enum ReceiptCommand {
    /// Verify a receipt's signature against a JWKS file and print its payload;
    /// exit 1 when it does not verify or has expired.
    Verify {
        /// The compact JWS, or `-` to read it from stdin.
        receipt: String,
        /// The JWKS (from `gavel keys`).
        #[arg(long)]
        jwks: std::path::PathBuf,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Recompute every hash chain; exit 1 and name the first bad entry on tampering.
    Verify {
        /// Verify this database file directly instead of asking a server.
        #[arg(long)]
        database_url: Option<String>,
        /// Signed checkpoints (one per line, from `gavel audit checkpoints`
        /// or the server's checkpoint file) the chains must still hold:
        /// finds entries deleted from a chain's end and rewritten chains.
        #[arg(long)]
        checkpoints: Option<std::path::PathBuf>,
        /// The JWKS the checkpoints are signed with (from `gavel keys`);
        /// needed with `--database-url`, where no server checks them.
        #[arg(long)]
        jwks: Option<std::path::PathBuf>,
    },
    /// Sign the head of every chain now and print the checkpoints, one per
    /// line: append them to a file kept outside the database.
    Checkpoints,
    /// One job's whole story, in order.
    Job {
        job_id: String,
        /// Only this tenant's entries.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Every entry as JSON lines.
    Export {
        #[arg(long)]
        chain: Option<String>,
        #[arg(long, default_value_t = 0)]
        after_seq: u64,
        #[arg(long)]
        job_id: Option<String>,
        /// Only this tenant's entries.
        #[arg(long)]
        tenant: Option<String>,
    },
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return hook::usage_error(e),
    };
    let output = cli.output;
    if let Command::Hook(args) = cli.command {
        return hook::run(&cli.conn, args);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            report_error(
                &CliError(format!("cannot start the async runtime: {e}")),
                output,
            );
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            report_error(&e, output);
            ExitCode::from(1)
        }
    }
}

async fn dispatch(cli: Cli) -> Result<ExitCode, CliError> {
    let (o, conn) = (cli.output, &cli.conn);
    match cli.command {
        Command::Serve(a) => serve::run_serve(a).await,
        Command::Migrate(a) => serve::run_migrate(a, o).await,
        Command::Token(c) => serve::run_token(c, o),
        Command::Outbox(c) => serve::run_outbox(c, o).await,
        Command::Policy(cmd) => policy::run(cmd, o, conn).await,
        Command::Job(cmd) => job::run(cmd, o),
        Command::Decide(a) => client::decide(conn, a, o).await,
        Command::Approve(a) => client::approve(conn, a, o).await,
        Command::Reject(a) => client::reject(conn, a, o).await,
        Command::Override(a) => client::override_job(conn, a, o).await,
        Command::Acknowledge(a) => client::acknowledge(conn, a, o).await,
        Command::Cancel(a) => client::cancel(conn, a, o).await,
        Command::Bind(a) => client::bind(conn, a, o).await,
        Command::Report(a) => client::report(conn, a, o).await,
        Command::Get { job_id, field } => client::get(conn, job_id, field, o).await,
        Command::Watch { job_id } => client::watch(conn, job_id, o).await,
        Command::List(a) => client::list(conn, a, o).await,
        Command::Audit(AuditCommand::Verify {
            database_url: Some(url),
            checkpoints,
            jwks,
        }) => verify_offline(&url, checkpoints.as_deref(), jwks.as_deref(), o).await,
        Command::Audit(AuditCommand::Verify {
            database_url: None,
            checkpoints,
            jwks,
        }) => {
            if jwks.is_some() {
                return Err(CliError(
                    "--jwks is for --database-url; a server checks checkpoints against its own key"
                        .into(),
                ));
            }
            let lines = match checkpoints {
                Some(path) => checkpoint_lines(&path)?,
                None => Vec::new(),
            };
            client::audit_verify(conn, lines, o).await
        }
        Command::Audit(AuditCommand::Checkpoints) => client::audit_checkpoints(conn, o).await,
        Command::Audit(AuditCommand::Job { job_id, tenant }) => {
            client::audit_job(conn, job_id, tenant, o).await
        }
        Command::Bench(cmd) => bench::run(cmd, o, conn).await,
        Command::Stats(a) => stats::run(conn, a, o).await,
        Command::Hook(a) => Ok(hook::answer_call(conn, a).await),
        Command::McpProxy(a) => mcp_proxy::run(conn, a).await,
        Command::Keys { key_file } => {
            if !key_file.exists() {
                return Err(CliError(format!(
                    "{}: no receipt key (the server creates it at first start)",
                    key_file.display()
                )));
            }
            let signer = crate::receipt::ReceiptSigner::load_or_create(&key_file)?;
            print_json(&signer.jwks());
            Ok(ExitCode::SUCCESS)
        }
        Command::Receipt(ReceiptCommand::Verify { receipt, jwks }) => {
            let receipt = if receipt == "-" {
                String::from_utf8(read_input(Path::new("-"), 64 * 1024)?)
                    .map_err(|_| CliError("the receipt is not text".into()))?
            } else {
                receipt
            };
            let keys: serde_json::Value = serde_json::from_str(&read_text(&jwks, 1024 * 1024)?)
                .map_err(|e| CliError(format!("{}: not JSON: {e}", jwks.display())))?;
            let payload = crate::receipt::verify(&receipt, &keys)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0);
            if payload["exp"].as_i64().is_none_or(|exp| exp < now) {
                return Err(CliError(format!(
                    "receipt: expired (exp {})",
                    payload["exp"]
                )));
            }
            match o {
                Output::Json => print_json(&payload),
                Output::Text => {
                    say!(
                        "valid receipt: job {} bound as {}",
                        payload["job_id"].as_str().unwrap_or(""),
                        payload["bind_id"].as_str().unwrap_or("")
                    );
                    say!(
                        "job hash:      {}",
                        payload["job_hash"].as_str().unwrap_or("")
                    );
                    say!(
                        "snapshot:      {}",
                        payload["policy_snapshot"].as_str().unwrap_or("")
                    );
                    say!("approvers:     {}", payload["approvers"]);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit(AuditCommand::Export {
            chain,
            after_seq,
            job_id,
            tenant,
        }) => client::audit_export(conn, chain, after_seq, job_id, tenant).await,
    }
}

/// The checkpoint lines of a file (blank lines and `#` comments skipped).
fn checkpoint_lines(path: &Path) -> Result<Vec<String>, CliError> {
    Ok(read_text(path, 64 * 1024 * 1024)?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

/// Verifies the audit chains of a database file without a server.
async fn verify_offline(
    url: &str,
    checkpoints: Option<&Path>,
    jwks: Option<&Path>,
    output: Output,
) -> Result<ExitCode, CliError> {
    let checkpoints = match (checkpoints, jwks) {
        (None, None) => Vec::new(),
        (Some(file), Some(jwks)) => {
            let keys: serde_json::Value = serde_json::from_str(&read_text(jwks, 1024 * 1024)?)
                .map_err(|e| CliError(format!("{}: not JSON: {e}", jwks.display())))?;
            crate::checkpoint::read_file(&read_text(file, 64 * 1024 * 1024)?, &keys)
                .map_err(|e| CliError(format!("{}: {e}", file.display())))?
        }
        (Some(_), None) => {
            return Err(CliError(
                "--checkpoints with --database-url needs --jwks (from `gavel keys`) to check their signatures"
                    .into(),
            ));
        }
        (None, Some(_)) => return Err(CliError("--jwks is only read with --checkpoints".into())),
    };
    if let Some(path) = url.strip_prefix("sqlite://")
        && !Path::new(path.split('?').next().unwrap_or(path)).exists()
    {
        return Err(CliError(format!("{url}: no such database")));
    }
    let store = crate::store::open(url, "main")
        .await
        .map_err(|e| CliError(e.to_string()))?;
    let v = crate::engine::verify_chains(store.as_ref(), &checkpoints)
        .await
        .map_err(|e| CliError(e.to_string()))?;
    Ok(client::print_verification(&v.chains, output))
}

/// An error that ends a command: a message that already says what and where.
#[derive(Debug)]
pub struct CliError(pub String);

impl<E: std::fmt::Display> From<E> for CliError {
    fn from(e: E) -> Self {
        CliError(e.to_string())
    }
}

fn report_error(e: &CliError, output: Output) {
    match output {
        Output::Text => eprintln!("error: {}", e.0),
        Output::Json => {
            // Refusals read `REASON: message`; give the reason its own field.
            let reason = e.0.split_once(": ").map(|(r, _)| r).filter(|r| {
                !r.is_empty() && r.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
            });
            say!(
                "{}",
                serde_json::json!({ "error": { "reason": reason, "message": e.0 } })
            )
        }
    }
}

/// Reads a file (or stdin for `-`) with a size limit, naming the file on error.
pub fn read_input(path: &Path, limit: u64) -> Result<Vec<u8>, CliError> {
    use std::io::Read;
    let shown = path.display();
    let mut buf = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .take(limit + 1)
            .read_to_end(&mut buf)
            .map_err(|e| CliError(format!("stdin: cannot read: {e}")))?;
    } else {
        let f = std::fs::File::open(path)
            .map_err(|e| CliError(format!("{shown}: cannot read: {e}")))?;
        // `take` hides the file's size from `read_to_end`, which would
        // then grow the buffer by doubling: reserve it once instead (a
        // 2.3 MiB policy otherwise holds a 4 MiB buffer).
        if let Ok(meta) = f.metadata() {
            buf.reserve_exact(meta.len().min(limit) as usize + 1);
        }
        f.take(limit + 1)
            .read_to_end(&mut buf)
            .map_err(|e| CliError(format!("{shown}: cannot read: {e}")))?;
    }
    if buf.len() as u64 > limit {
        return Err(CliError(format!(
            "{shown}: larger than the limit of {limit} bytes"
        )));
    }
    Ok(buf)
}

/// Reads a UTF-8 text file.
pub fn read_text(path: &Path, limit: u64) -> Result<String, CliError> {
    let bytes = read_input(path, limit)?;
    String::from_utf8(bytes).map_err(|e| {
        CliError(format!(
            "{}: not UTF-8 text (invalid byte at offset {})",
            path.display(),
            e.utf8_error().valid_up_to()
        ))
    })
}

/// Prints a JSON value on stdout.
pub fn print_json(v: &serde_json::Value) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => say!("{s}"),
        Err(e) => eprintln!("error: cannot print JSON: {e}"),
    }
}

/// The largest policy file accepted.
pub const MAX_POLICY_BYTES: u64 = 64 * 1024 * 1024;
