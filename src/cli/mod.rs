//! The `gavel` command line: argument parsing and output formatting around
//! the core. One file per command group.
//!
//! Exit codes: 0 success, 1 a finding, a failed test or any other error,
//! 2 a usage error (clap's own).

mod job;
mod policy;

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
    #[command(subcommand)]
    command: Command,
}

/// How results are printed.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable text.
    Text,
    /// One JSON document on stdout.
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Check, hash, explain and test policy files.
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Work with job files.
    #[command(subcommand)]
    Job(job::JobCommand),
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Policy(cmd) => policy::run(cmd, cli.output),
        Command::Job(cmd) => job::run(cmd, cli.output),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            report_error(&e, cli.output);
            ExitCode::from(1)
        }
    }
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
        Output::Json => println!("{}", serde_json::json!({ "error": { "message": e.0 } })),
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
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot print JSON: {e}"),
    }
}

/// The largest policy file accepted.
pub const MAX_POLICY_BYTES: u64 = 64 * 1024 * 1024;
