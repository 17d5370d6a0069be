//! The operations files hold to the server: every family a real server
//! exposes is in the metrics table of `docs/metrics.md` with its type; the
//! Grafana dashboard (`deploy/grafana/gavel.json`) charts every documented
//! metric and the Prometheus alert rules (`deploy/prometheus/
//! gavel-alerts.yml`) cover the four signals; both query only
//! documented metrics, with their labels and the suffixes their types
//! have.

use super::helpers::{full_cycle, job, spawn_app};
use crate::store::Backend;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A documented family: its type and labels.
#[derive(Debug, Clone, PartialEq)]
struct Family {
    kind: String,
    labels: BTreeSet<String>,
}

/// The backticked words of a cell outside parentheses (the parentheses
/// list a label's values).
fn ticked_outside_parens(cell: &str) -> Vec<String> {
    let mut depth = 0;
    let mut outside = String::new();
    for c in cell.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth == 0 => outside.push(c),
            _ => {}
        }
    }
    outside
        .split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The table in docs/metrics.md, by family name (a counter's without
/// `_total`, as the exposition's `# TYPE` line names it).
fn documented() -> BTreeMap<String, Family> {
    let mut out = BTreeMap::new();
    for line in read("docs/metrics.md").lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 5 || !cells[1].starts_with("`gavel_") {
            continue;
        }
        let name = cells[1].trim_matches('`');
        let kind = cells[2].to_owned();
        let family = match kind.as_str() {
            "counter" => name
                .strip_suffix("_total")
                .unwrap_or_else(|| panic!("counter {name} must end in _total")),
            _ => name,
        };
        let labels = ticked_outside_parens(cells[3]).into_iter().collect();
        out.insert(family.to_owned(), Family { kind, labels });
    }
    out
}

/// `# TYPE` lines of a real server's exposition, after one job went
/// through (families without a sample are not exposed).
async fn exposed() -> BTreeMap<String, String> {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    full_cycle(&app, job("ops-1", "deploy", &[]), &["alice", "bob"]).await;
    let text = crate::http_client()
        .get(format!("http://{}/metrics", app.http_addr))
        .bearer_auth("test-token-operator")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_owned(), t.to_owned()))
        .collect()
}

/// A metric a query names and the labels its selector matches on.
#[derive(Debug)]
struct Selected {
    name: String,
    matchers: Vec<String>,
}

/// The metrics and grouping labels of one PromQL expression. A small
/// reader for the subset the files use: identifiers, `{…}` selectors,
/// `by (…)` / `on (…)` lists; strings and `[ranges]` skipped.
fn read_query(q: &str) -> (Vec<Selected>, BTreeSet<String>) {
    const WORDS: &[&str] = &[
        "sum",
        "max",
        "min",
        "count",
        "rate",
        "increase",
        "histogram_quantile",
        "by",
        "on",
        "without",
        "unless",
        "and",
        "or",
        "absent",
    ];
    let b = q.as_bytes();
    let (mut i, mut metrics, mut grouping) = (0, Vec::new(), BTreeSet::new());
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    while i < b.len() {
        let c = b[i];
        if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += 1;
            }
            i += 1;
        } else if c == b'[' {
            while i < b.len() && b[i] != b']' {
                i += 1;
            }
            i += 1;
        } else if c == b'$' {
            // Grafana's $__rate_interval and friends.
            i += 1;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let start = i;
            while i < b.len() && ident(b[i]) {
                i += 1;
            }
            let word = &q[start..i];
            let mut j = i;
            while j < b.len() && b[j] == b' ' {
                j += 1;
            }
            if ["by", "on", "without"].contains(&word) && j < b.len() && b[j] == b'(' {
                let end = q[j..].find(')').unwrap() + j;
                for l in q[j + 1..end].split(',') {
                    grouping.insert(l.trim().to_owned());
                }
                i = end + 1;
            } else if !WORDS.contains(&word) {
                let mut matchers = Vec::new();
                if j < b.len() && b[j] == b'{' {
                    let end = q[j..].find('}').unwrap() + j;
                    for m in q[j + 1..end].split(',') {
                        let key: String = m
                            .trim()
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        matchers.push(key);
                    }
                    i = end + 1;
                }
                metrics.push(Selected {
                    name: word.to_owned(),
                    matchers,
                });
            }
        } else {
            i += 1;
        }
    }
    (metrics, grouping)
}

/// Checks one expression against the documented families; returns the
/// families it uses.
fn check_query(
    q: &str,
    docs: &BTreeMap<String, Family>,
    problems: &mut Vec<String>,
) -> BTreeSet<String> {
    let (metrics, grouping) = read_query(q);
    let mut used = BTreeSet::new();
    let mut labels: BTreeSet<String> = BTreeSet::new();
    for m in &metrics {
        if m.name == "up" {
            // Prometheus's own scrape health, labels job and instance.
            labels.extend(["job".to_owned(), "instance".to_owned()]);
            continue;
        }
        // A numeric literal's exponent or a bare word would land here.
        let found = docs.iter().find_map(|(family, f)| {
            let suffix = m.name.strip_prefix(family.as_str())?;
            let fits = match f.kind.as_str() {
                "counter" => suffix == "_total",
                "histogram" => ["_bucket", "_sum", "_count"].contains(&suffix),
                _ => suffix.is_empty(),
            };
            fits.then_some((family, f, suffix))
        });
        let Some((family, f, suffix)) = found else {
            problems.push(format!("`{q}`: `{}` is not a documented series", m.name));
            continue;
        };
        used.insert(family.clone());
        labels.extend(f.labels.iter().cloned());
        if suffix == "_bucket" {
            labels.insert("le".into());
        }
        for k in &m.matchers {
            if !f.labels.contains(k) {
                problems.push(format!("`{q}`: `{}` has no label `{k}`", m.name));
            }
        }
    }
    if metrics.is_empty() {
        problems.push(format!("`{q}`: names no metric"));
    }
    for g in grouping {
        if !labels.contains(&g) {
            problems.push(format!(
                "`{q}`: groups by `{g}`, which none of its metrics has"
            ));
        }
    }
    used
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_query_what_the_server_exposes() {
    let docs = documented();
    assert!(docs.len() >= 15, "{docs:#?}");

    // Every exposed family is documented, with its type.
    let exposed = exposed().await;
    let gavel: Vec<_> = exposed
        .iter()
        .filter(|(n, _)| n.starts_with("gavel_"))
        .collect();
    assert!(gavel.len() >= 10, "{exposed:#?}");
    for (name, kind) in gavel {
        match docs.get(name) {
            Some(f) => assert_eq!(&f.kind, kind, "{name}"),
            None => panic!("{name} ({kind}) is exposed but not in docs/metrics.md"),
        }
    }

    let mut problems = Vec::new();

    // The dashboard: a datasource variable, unique panel ids, queries.
    let dash: Value = serde_json::from_str(&read("deploy/grafana/gavel.json")).unwrap();
    assert_eq!(dash["templating"]["list"][0]["name"], "datasource");
    assert_eq!(dash["templating"]["list"][0]["query"], "prometheus");
    let panels = dash["panels"].as_array().unwrap();
    let ids: BTreeSet<i64> = panels.iter().map(|p| p["id"].as_i64().unwrap()).collect();
    assert_eq!(ids.len(), panels.len(), "panel ids repeat");
    let mut charted = BTreeSet::new();
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} has no query", p["title"]);
        assert_eq!(p["datasource"]["uid"], "${datasource}");
        for t in targets {
            let q = t["expr"].as_str().unwrap();
            charted.extend(check_query(q, &docs, &mut problems));
        }
    }
    let all: BTreeSet<String> = docs.keys().cloned().collect();
    assert_eq!(charted, all, "the dashboard should chart every metric");

    // The alert rules: well formed, and covering the four.
    let rules: Value = serde_saphyr::from_str(&read("deploy/prometheus/gavel-alerts.yml")).unwrap();
    let mut names = BTreeSet::new();
    let mut alerted = BTreeSet::new();
    for group in rules["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            let name = r["alert"].as_str().unwrap();
            assert!(names.insert(name.to_owned()), "{name} twice");
            assert!(name.starts_with("Gavel"), "{name}");
            let severity = r["labels"]["severity"].as_str().unwrap();
            assert!(
                ["critical", "warning", "info"].contains(&severity),
                "{name}"
            );
            assert!(!r["annotations"]["summary"].as_str().unwrap().is_empty());
            if let Some(f) = r.get("for") {
                let f = f.as_str().unwrap();
                assert!(f.ends_with('m') || f.ends_with('h'), "{name}: for {f}");
            }
            let q = r["expr"].as_str().unwrap();
            alerted.extend(check_query(q, &docs, &mut problems));
        }
    }
    for needed in [
        "gavel_pending_jobs",
        "gavel_expiries",
        "gavel_unacknowledged_overrides",
        "gavel_deliveries",
    ] {
        assert!(alerted.contains(needed), "no alert on {needed}");
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_query_reader_finds_metrics_labels_and_grouping() {
    let (m, g) = read_query(
        "sum by (channel) (rate(gavel_deliveries_total{result=\"retry\", channel!=\"x\"}[10m])) > 0",
    );
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].name, "gavel_deliveries_total");
    assert_eq!(m[0].matchers, ["result", "channel"]);
    assert_eq!(g, BTreeSet::from(["channel".to_owned()]));
    let docs = documented();
    let mut problems = Vec::new();
    check_query("max by (color) (gavel_pending_jobs)", &docs, &mut problems);
    check_query("gavel_pending_jobs_total", &docs, &mut problems);
    check_query(
        "rate(gavel_binds_total{rule=\"x\"}[5m])",
        &docs,
        &mut problems,
    );
    check_query("gavel_decide_duration_seconds_bucket", &docs, &mut problems);
    assert_eq!(problems.len(), 3, "{problems:#?}");
}
