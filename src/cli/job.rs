//! `gavel job …`: job files.

use super::{CliError, Output, read_input};
use crate::job::{Job, Limits};
use clap::Subcommand;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum JobCommand {
    /// Print the job hash (sha256 of the RFC 8785 canonical job) on one line.
    Hash {
        /// The job as JSON, or `-` for stdin.
        file: PathBuf,
        /// Also print the canonical JSON that was hashed.
        #[arg(long)]
        canonical: bool,
    },
}

/// Reads and validates a job file with the default limits.
pub fn read_job(path: &std::path::Path) -> Result<Job, CliError> {
    let limits = Limits::default();
    let bytes = read_input(path, limits.max_request_bytes as u64)?;
    Job::from_json(&bytes, &limits).map_err(|e| CliError(format!("{}: {e}", path.display())))
}

pub fn run(cmd: JobCommand, output: Output) -> Result<ExitCode, CliError> {
    match cmd {
        JobCommand::Hash { file, canonical } => {
            let job = read_job(&file)?;
            let hash = job.hash();
            match output {
                Output::Text => {
                    say!("{hash}");
                    if canonical {
                        say!("{}", job.canonical_json());
                    }
                }
                Output::Json => {
                    let mut v = serde_json::json!({ "job_hash": hash });
                    if canonical {
                        v["canonical_job"] = job.canonical_json().into();
                    }
                    super::print_json(&v);
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
