//! `gavel bench`: the load generator and its policy generator.

use super::{CliError, Output, print_json, read_text};
use crate::bench::{self, Plan, Scenario, Tokens};
use crate::policy::generate;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Load a running server and report throughput, latency and every status.
    Run(RunArgs),
    /// Print a generated policy of N rules (a realistic mix, most not
    /// matching any given job), optionally appended to a base policy.
    GenPolicy {
        #[arg(long)]
        rules: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Append the generated rules to this policy (its last key must be `rules:`).
        #[arg(long)]
        base: Option<PathBuf>,
    },
}

#[derive(Args, Debug)]
pub struct RunArgs {
    #[arg(long, value_enum)]
    pub scenario: Scenario,
    /// Tokens by role: a `{"identities":[{"name","token","roles"}]}` file,
    /// such as `gavel serve --dev`'s dev-identities.json.
    #[arg(long, default_value = "gavel-data/dev-identities.json")]
    pub identities: PathBuf,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Calls in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Offered calls per second (open loop); omit for closed loop.
    #[arg(long)]
    pub rate: Option<f64>,
    /// bind-race: approved jobs to race on.
    #[arg(long, default_value_t = 50)]
    pub race_jobs: usize,
    /// reload: rules in the reloaded policies.
    #[arg(long, default_value_t = 10_000)]
    pub reload_rules: usize,
    /// reload: the base the generated rules are appended to.
    #[arg(long, default_value = "policies/default.yaml")]
    pub reload_base: PathBuf,
    /// Stop after this many operations (closed loop only).
    #[arg(long)]
    pub max_operations: Option<u64>,
}

pub async fn run(
    cmd: BenchCommand,
    output: Output,
    conn: &super::client::Conn,
) -> Result<ExitCode, CliError> {
    match cmd {
        BenchCommand::GenPolicy { rules, seed, base } => {
            let text = match base {
                Some(b) => {
                    generate::extend_policy(&read_text(&b, super::MAX_POLICY_BYTES)?, rules, seed)
                }
                None => generate::policy_yaml(rules, seed),
            };
            say_raw!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Run(a) => {
            let ids: serde_json::Value =
                serde_json::from_str(&read_text(&a.identities, 1024 * 1024)?)
                    .map_err(|e| CliError(format!("{}: not JSON: {e}", a.identities.display())))?;
            let tokens = Tokens::from_json(&ids)
                .map_err(|e| CliError(format!("{}: {e}", a.identities.display())))?;
            let reload_policies = if a.scenario == Scenario::Reload {
                let base = read_text(&a.reload_base, super::MAX_POLICY_BYTES)?;
                vec![
                    generate::extend_policy(&base, a.reload_rules, 1),
                    generate::extend_policy(&base, a.reload_rules, 2),
                ]
            } else {
                Vec::new()
            };
            let secs = |s: f64, what: &str| -> Result<Duration, CliError> {
                if s.is_finite() && s >= 0.0 {
                    Ok(Duration::from_secs_f64(s))
                } else {
                    Err(CliError(format!("--{what} must be a number of seconds")))
                }
            };
            let report = bench::run(Plan {
                server: conn.server.clone(),
                tls: conn.tls_files(),
                scenario: a.scenario,
                duration: secs(a.duration, "duration")?,
                warmup: secs(a.warmup, "warmup")?,
                connections: a.connections,
                concurrency: a.concurrency,
                rate: a.rate,
                tokens,
                reload_policies,
                race_jobs: a.race_jobs,
                max_operations: a.max_operations,
            })
            .await
            .map_err(CliError)?;
            match output {
                Output::Json => print_json(&serde_json::to_value(&report)?),
                Output::Text => say_raw!("{}", bench::render(&report)),
            }
            let violated = report
                .extra
                .get("jobs_bound_twice")
                .and_then(|v| v.as_u64())
                .unwrap_or(0)
                > 0;
            Ok(if violated {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}
