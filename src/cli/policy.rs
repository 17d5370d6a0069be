//! `gavel policy check|hash|explain|test`: policy files offline.

use super::job::read_job;
use super::{CliError, MAX_POLICY_BYTES, Output, print_json, read_text};
use crate::policy::{self, Explanation, Finding, Severity, Snapshot, suite};
use clap::Subcommand;
use serde_json::json;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Validate policy files: errors and lint warnings with file:line:column.
    /// Exits 1 when anything is found.
    Check {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Exit 0 when there are warnings but no errors.
        #[arg(long)]
        allow_warnings: bool,
    },
    /// Print the snapshot id (cfg:<name>:policy#sha256:<hex>) alone on one line.
    Hash { file: PathBuf },
    /// Evaluate a job against a policy and say why every rule did or did not match.
    Explain {
        file: PathBuf,
        /// The job as JSON, or `-` for stdin.
        #[arg(long)]
        job: PathBuf,
        /// Evaluate as this authenticated principal (for `principal` matchers).
        #[arg(long)]
        principal: Option<String>,
    },
    /// Run YAML test suites: a suite file, or a directory (its `tests/`
    /// folder when it has one) of `*.yaml` suites.
    Test {
        path: PathBuf,
        /// Also write the results as JUnit XML to this file.
        #[arg(long)]
        junit: Option<PathBuf>,
    },
    /// Validate a policy on the server and activate it (or only validate, with --dry-run).
    Reload {
        file: PathBuf,
        #[arg(long)]
        dry_run: bool,
        /// Make it this tenant's policy (named after the tenant) instead
        /// of the system policy.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Print the active snapshot's source (or a snapshot's, by id).
    Show {
        snapshot_id: Option<String>,
        /// Without a snapshot id: this tenant's active snapshot.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List the server's snapshots.
    List,
    /// Revoke a snapshot: its jobs can no longer be bound.
    Revoke {
        snapshot_id: String,
        #[arg(long)]
        reason: String,
    },
}

pub async fn run(
    cmd: PolicyCommand,
    output: Output,
    conn: &super::client::Conn,
) -> Result<ExitCode, CliError> {
    use super::client;
    match cmd {
        PolicyCommand::Reload {
            file,
            dry_run,
            tenant,
        } => client::policy_reload(conn, &file, tenant, dry_run, output).await,
        PolicyCommand::Show {
            snapshot_id,
            tenant,
        } => client::policy_show(conn, snapshot_id, tenant, output).await,
        PolicyCommand::List => client::policy_list(conn, output).await,
        PolicyCommand::Revoke {
            snapshot_id,
            reason,
        } => client::policy_revoke(conn, snapshot_id, reason, output).await,
        PolicyCommand::Check {
            files,
            allow_warnings,
        } => check(&files, allow_warnings, output),
        PolicyCommand::Hash { file } => {
            let snapshot = load_file(&file)?;
            match output {
                Output::Text => say!("{}", snapshot.id),
                Output::Json => print_json(&json!({ "policy_snapshot": snapshot.id })),
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Explain {
            file,
            job,
            principal,
        } => {
            let snapshot = load_file(&file)?;
            let job = read_job(&job)?;
            let explanation = snapshot.policy.explain(&job, principal.as_deref());
            let job_hash = job.hash();
            match output {
                Output::Json => {
                    let mut v = serde_json::to_value(&explanation)?;
                    v["job_hash"] = json!(job_hash);
                    v["policy_snapshot"] = json!(snapshot.id);
                    print_json(&v);
                }
                Output::Text => print_explanation(&explanation, job_hash.as_str(), &snapshot),
            }
            Ok(ExitCode::SUCCESS)
        }
        PolicyCommand::Test { path, junit } => test(&path, junit.as_deref(), output),
    }
}

/// Loads a policy file, turning findings into one error that lists them all.
fn load_file(path: &Path) -> Result<Snapshot, CliError> {
    let source = read_text(path, MAX_POLICY_BYTES)?;
    let name = path.display().to_string();
    policy::load(&source, &name)
        .map(|l| l.snapshot)
        .map_err(|e| {
            let lines: Vec<String> = e.findings.iter().map(Finding::to_string).collect();
            CliError(lines.join("\n"))
        })
}

fn check(files: &[PathBuf], allow_warnings: bool, output: Output) -> Result<ExitCode, CliError> {
    let mut failed = false;
    let mut reports = Vec::new();
    for path in files {
        let name = path.display().to_string();
        let source = match read_text(path, MAX_POLICY_BYTES) {
            Ok(s) => s,
            Err(e) => {
                failed = true;
                match output {
                    Output::Text => eprintln!("error: {}", e.0),
                    Output::Json => {
                        reports.push(json!({ "file": name, "ok": false, "error": e.0 }))
                    }
                }
                continue;
            }
        };
        let (snapshot, findings) = match policy::load(&source, &name) {
            Ok(l) => (Some(l.snapshot), l.warnings),
            Err(e) => (None, e.findings),
        };
        let errors = findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .count();
        let warnings = findings.len() - errors;
        let ok = errors == 0 && (warnings == 0 || allow_warnings);
        failed |= !ok;
        match output {
            Output::Text => {
                for f in &findings {
                    say!("{f}");
                }
                match &snapshot {
                    Some(s) => say!(
                        "{name}: {} ({} rules, {warnings} warnings) {}",
                        if ok { "ok" } else { "warnings" },
                        s.policy.rules().len(),
                        s.id
                    ),
                    None => say!("{name}: {errors} errors, {warnings} warnings"),
                }
            }
            Output::Json => reports.push(json!({
                "file": name,
                "ok": ok,
                "policy_snapshot": snapshot.as_ref().map(|s| s.id.to_string()),
                "rules": snapshot.as_ref().map(|s| s.policy.rules().len()),
                "errors": errors,
                "warnings": warnings,
                "findings": findings,
            })),
        }
    }
    if output == Output::Json {
        print_json(&json!({ "ok": !failed, "files": reports }));
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn secs(s: u64) -> String {
    crate::policy::model::Secs(s).to_string()
}

fn print_explanation(x: &Explanation, job_hash: &str, snapshot: &Snapshot) {
    let e = &x.evaluation;
    say!(
        "decision:    {} (primary rule `{}`)",
        e.decision,
        e.primary_rule
    );
    say!("reason:      {}", e.reason);
    if e.overridable {
        say!("             break-glass may override this deny");
    }
    say!(
        "matched:     {}",
        if e.matched_rules.is_empty() {
            "(none)".to_owned()
        } else {
            e.matched_rules.join(", ")
        }
    );
    for g in &e.gates {
        say!(
            "gate:        {} approver(s) holding one of [{}] (from {}); sla {}, timeout {}, bind within {}",
            g.approvers,
            g.roles.join(", "),
            g.rules.join(", "),
            secs(g.sla_seconds),
            secs(g.timeout_seconds),
            secs(g.bind_within_seconds)
        );
    }
    if !e.constraints.is_empty() {
        say!(
            "constraints: {}",
            serde_json::to_string(&e.constraints).unwrap_or_default()
        );
    }
    for c in &e.constraint_conflicts {
        say!(
            "conflict:    `{}` set to {} by `{}` and to {} by `{}`; the first rule wins",
            c.key,
            c.kept,
            c.kept_rule,
            c.ignored,
            c.ignored_rule
        );
    }
    say!("title:       {}", e.decision_summary.title);
    say!("why:         {}", e.decision_summary.why);
    say!("next effect: {}", e.decision_summary.next_effect);
    say!("job hash:    {job_hash}");
    say!("snapshot:    {}", snapshot.id);
    say!("rules:");
    for r in &x.rules {
        if r.matched {
            say!("  match    {} ({})", r.rule, r.decision);
        } else {
            say!("  no match {} ({})", r.rule, r.decision);
            for f in &r.failures {
                say!("           {}: {}", f.matcher, f.detail);
            }
        }
    }
}

/// Finds suite files: the file itself, or `*.yaml`/`*.yml` in `DIR/tests`
/// (when it exists) or in `DIR`, sorted by name.
fn suite_files(path: &Path) -> Result<Vec<PathBuf>, CliError> {
    if path.is_file() {
        return Ok(vec![path.to_owned()]);
    }
    let dir = if path.join("tests").is_dir() {
        path.join("tests")
    } else {
        path.to_owned()
    };
    let entries = std::fs::read_dir(&dir)
        .map_err(|e| CliError(format!("{}: cannot read directory: {e}", dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(CliError(format!(
            "{}: no test suites (*.yaml) found",
            dir.display()
        )));
    }
    Ok(files)
}

struct SuiteRun {
    file: String,
    name: String,
    policy: String,
    error: Option<String>,
    cases: Vec<suite::CaseResult>,
}

fn test(path: &Path, junit: Option<&Path>, output: Output) -> Result<ExitCode, CliError> {
    let mut policies: HashMap<PathBuf, Result<Snapshot, String>> = HashMap::new();
    let mut runs = Vec::new();
    for file in suite_files(path)? {
        let shown = file.display().to_string();
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parsed = read_text(&file, MAX_POLICY_BYTES)
            .map_err(|e| e.0)
            .and_then(|src| suite::parse(&src, &shown));
        let s = match parsed {
            Ok(s) => s,
            Err(e) => {
                runs.push(SuiteRun {
                    file: shown,
                    name: stem,
                    policy: String::new(),
                    error: Some(e),
                    cases: Vec::new(),
                });
                continue;
            }
        };
        let policy_path = file.parent().unwrap_or(Path::new(".")).join(&s.policy);
        let snapshot = policies
            .entry(policy_path.clone())
            .or_insert_with(|| load_file(&policy_path).map_err(|e| e.0));
        let run = match snapshot {
            Ok(snap) => SuiteRun {
                file: shown,
                name: s.name.clone().unwrap_or(stem),
                policy: policy_path.display().to_string(),
                error: None,
                cases: s.run(snap),
            },
            Err(e) => SuiteRun {
                file: shown,
                name: s.name.clone().unwrap_or(stem),
                policy: policy_path.display().to_string(),
                error: Some(e.clone()),
                cases: Vec::new(),
            },
        };
        runs.push(run);
    }

    let total: usize = runs.iter().map(|r| r.cases.len()).sum();
    let failed_cases: usize = runs
        .iter()
        .map(|r| r.cases.iter().filter(|c| !c.passed).count())
        .sum();
    let broken_suites = runs.iter().filter(|r| r.error.is_some()).count();
    let ok = failed_cases == 0 && broken_suites == 0 && total > 0;

    if let Some(junit) = junit {
        std::fs::write(junit, junit_xml(&runs))
            .map_err(|e| CliError(format!("{}: cannot write: {e}", junit.display())))?;
    }
    match output {
        Output::Text => {
            for r in &runs {
                say!("{} ({}; policy {})", r.name, r.file, r.policy);
                if let Some(e) = &r.error {
                    say!("  ERROR {e}");
                }
                for c in &r.cases {
                    if c.passed {
                        say!("  ok    {}", c.name);
                    } else {
                        say!("  FAIL  {} ({}:{})", c.name, r.file, c.line);
                        for f in &c.failures {
                            say!("        {f}");
                        }
                    }
                }
            }
            say!(
                "{} passed, {failed_cases} failed, {broken_suites} suites with errors",
                total - failed_cases
            );
        }
        Output::Json => {
            let suites: Vec<_> = runs
                .iter()
                .map(|r| {
                    json!({
                        "file": r.file,
                        "name": r.name,
                        "policy": r.policy,
                        "error": r.error,
                        "cases": r.cases.iter().map(|c| json!({
                            "name": c.name,
                            "line": c.line,
                            "passed": c.passed,
                            "failures": c.failures,
                        })).collect::<Vec<_>>(),
                    })
                })
                .collect();
            print_json(&json!({
                "ok": ok,
                "passed": total - failed_cases,
                "failed": failed_cases,
                "suites_with_errors": broken_suites,
                "suites": suites,
            }));
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot carry most control characters at all.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

fn junit_xml(runs: &[SuiteRun]) -> String {
    let tests: usize = runs
        .iter()
        .map(|r| r.cases.len().max(usize::from(r.error.is_some())))
        .sum();
    let failures: usize = runs
        .iter()
        .map(|r| r.cases.iter().filter(|c| !c.passed).count())
        .sum();
    let errors = runs.iter().filter(|r| r.error.is_some()).count();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    x.push_str(&format!(
        "<testsuites name=\"gavel policy test\" tests=\"{tests}\" failures=\"{failures}\" errors=\"{errors}\">\n"
    ));
    for r in runs {
        let f = r.cases.iter().filter(|c| !c.passed).count();
        x.push_str(&format!(
            "  <testsuite name=\"{}\" file=\"{}\" tests=\"{}\" failures=\"{f}\" errors=\"{}\">\n",
            xml_escape(&r.name),
            xml_escape(&r.file),
            r.cases.len(),
            usize::from(r.error.is_some())
        ));
        if let Some(e) = &r.error {
            x.push_str(&format!(
                "    <testcase name=\"(suite)\" classname=\"{}\" file=\"{}\">\n      <error message=\"{}\"/>\n    </testcase>\n",
                xml_escape(&r.name),
                xml_escape(&r.file),
                xml_escape(e)
            ));
        }
        for c in &r.cases {
            x.push_str(&format!(
                "    <testcase name=\"{}\" classname=\"{}\" file=\"{}\" line=\"{}\"",
                xml_escape(&c.name),
                xml_escape(&r.name),
                xml_escape(&r.file),
                c.line
            ));
            if c.passed {
                x.push_str("/>\n");
            } else {
                x.push_str(">\n");
                x.push_str(&format!(
                    "      <failure message=\"{}\">{}</failure>\n    </testcase>\n",
                    xml_escape(c.failures.first().map(String::as_str).unwrap_or("failed")),
                    xml_escape(&c.failures.join("\n"))
                ));
            }
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}
