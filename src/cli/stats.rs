//! `gavel stats`: the server's approval statistics of a window, as text or
//! as the report's JSON.

use super::client::{Conn, refused};
use super::{CliError, Output, print_json};
use crate::policy::model::Secs;
use crate::proto::v1 as pb;
use crate::stats::{Durations, Report};
use clap::Args;
use std::process::ExitCode;

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// How far back to look: jobs decided in the last `7d`, `24h`, `90m` …
    #[arg(long, default_value = "7d", value_parser = parse_window)]
    since: Secs,
    /// Only this tenant's jobs.
    #[arg(long)]
    tenant: Option<String>,
}

fn parse_window(s: &str) -> Result<Secs, String> {
    Secs::parse(s)
}

pub async fn run(conn: &Conn, a: StatsArgs, output: Output) -> Result<ExitCode, CliError> {
    let mut c = conn.connect().await?;
    let json = c
        .audit
        .get_stats(pb::GetStatsRequest {
            window_seconds: a.since.0,
            tenant: a.tenant.unwrap_or_default(),
        })
        .await
        .map_err(refused)?
        .into_inner()
        .report_json;
    let report: Report = serde_json::from_str(&json)
        .map_err(|e| CliError(format!("the server's report does not parse: {e}")))?;
    match output {
        Output::Json => {
            print_json(&serde_json::to_value(&report).map_err(|e| CliError(e.to_string()))?)
        }
        Output::Text => print_text(&report, a.since),
    }
    Ok(ExitCode::SUCCESS)
}

/// A duration in ms the way a person reads it: `4.2 s`, `3 m 10 s`, `2 h 5 m`.
pub fn human_ms(ms: i64) -> String {
    let s = ms / 1000;
    match s {
        _ if ms < 10_000 => format!("{:.1} s", ms as f64 / 1000.0),
        0..60 => format!("{s} s"),
        60..3600 => format!("{} m {} s", s / 60, s % 60),
        3600..86_400 => format!("{} h {} m", s / 3600, s % 3600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

fn quantiles(d: &Durations) -> String {
    match (d.median_ms, d.p90_ms) {
        (Some(m), Some(p)) => format!("median {}, p90 {}", human_ms(m), human_ms(p)),
        _ => "none decided".into(),
    }
}

fn print_text(r: &Report, window: Secs) {
    let scope = r
        .tenant
        .as_deref()
        .map(|t| format!(", tenant {t}"))
        .unwrap_or_default();
    say!("Jobs decided in the last {window}{scope}: {}", r.jobs);
    let tiers: Vec<String> = r
        .decisions
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    say!("  decisions: {}", tiers.join(", "));
    let ends: Vec<String> = r
        .approval_outcomes
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    say!("  sent for approval: {}", ends.join(", "));
    say!(
        "  time to decision ({} decided): {}",
        r.time_to_decision.count,
        quantiles(&r.time_to_decision)
    );
    say!(
        "  expiries {} (approved but never bound {}), escalations {}, overrides {}",
        r.expiries,
        r.expired_unbound,
        r.escalations,
        r.overrides
    );
    if !r.by_rule.is_empty() {
        say!("By rule:");
        for x in &r.by_rule {
            say!(
                "  {:<24} jobs {:>4}  approved {:>4}  rejected {:>4}  expired {:>4}  {}",
                x.rule,
                x.jobs,
                x.approved,
                x.rejected,
                x.expired,
                quantiles(&x.time_to_decision)
            );
        }
    }
    if !r.by_role.is_empty() {
        say!("By gate role:");
        for x in &r.by_role {
            say!(
                "  {:<24} jobs {:>4}  {}",
                x.role,
                x.jobs,
                quantiles(&x.time_to_decision)
            );
        }
    }
    if !r.rejection_reasons.is_empty() {
        say!("Rejection reasons:");
        for x in &r.rejection_reasons {
            say!("  {:>4}  {}", x.count, x.reason);
        }
    }
    if !r.approvers.is_empty() {
        say!("Approvers:");
        for a in &r.approvers {
            say!(
                "  {:<20} approvals {:>4}  rejections {:>4}  rate {:>5.1}%  median review {}{}",
                a.approver,
                a.approvals,
                a.rejections,
                a.approval_rate * 100.0,
                a.median_review_ms.map_or("-".into(), human_ms),
                a.rubber_stamp
                    .as_deref()
                    .map(|w| format!("\n      RUBBER STAMP? {w}"))
                    .unwrap_or_default()
            );
        }
    }
    if !r.slowest.is_empty() {
        say!("Slowest decisions:");
        for j in &r.slowest {
            say!(
                "  {:<40} {:<20} {:<9} {}",
                j.job_id,
                j.rule,
                j.outcome,
                human_ms(j.ms)
            );
        }
    }
}
