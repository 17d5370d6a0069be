//! `gavel bench` smoke test: every scenario for a second against a real
//! `gavel serve --dev` process. It checks the report is well-formed and its
//! counts add up; it asserts nothing about speed (BENCHMARKS.md does that).

use super::helpers::listening_addr;
use super::root;
use serde_json::Value;
use std::process::{Command, Stdio};

fn check_report(r: &Value, scenario: &str) {
    assert_eq!(r["scenario"], scenario);
    let ops = r["operations"].as_u64().unwrap();
    let ok = r["ok"].as_u64().unwrap();
    let errors = r["errors"].as_u64().unwrap();
    assert_eq!(ok + errors, ops, "{r}");
    let statuses: u64 = r["statuses"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(statuses, ops, "every operation has a status: {r}");
    assert_eq!(
        r["statuses"].get("OK").and_then(Value::as_u64).unwrap_or(0),
        ok
    );
    let reasons: u64 = r["reasons"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(reasons, errors, "every error has a reason: {r}");
    let l = &r["latency_us"];
    assert_eq!(l["count"].as_u64().unwrap(), ops);
    if ops > 0 {
        let (p50, p99, max) = (
            l["p50"].as_u64().unwrap(),
            l["p99"].as_u64().unwrap(),
            l["max"].as_u64().unwrap(),
        );
        assert!(p50 <= p99 && p99 <= max, "{l}");
        let tput = r["throughput_per_sec"].as_f64().unwrap();
        let secs = r["duration_secs"].as_f64().unwrap();
        assert!((tput * secs - ops as f64).abs() < 1.0, "{r}");
    }
}

#[test]
fn every_bench_scenario_runs_and_reports_consistent_counts() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(root().join("policies"), dir.path().join("policies")).unwrap();
    let bin = env!("CARGO_BIN_EXE_gavel");
    let mut server = Command::new(bin)
        .args([
            "serve",
            "--dev",
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = listening_addr(&mut server);
    let server_url = format!("http://{addr}");

    let run = |args: &[&str]| -> Value {
        let o = Command::new(bin)
            .args([
                "bench",
                "run",
                "--server",
                &server_url,
                "--identities",
                "gavel-data/dev-identities.json",
            ])
            .args([
                "--duration",
                "1",
                "--warmup",
                "0.2",
                "--connections",
                "2",
                "--concurrency",
                "8",
                "--output",
                "json",
            ])
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).unwrap()
    };

    for scenario in ["health", "decide-allow", "decide-approval", "cycle"] {
        let r = run(&["--scenario", scenario]);
        check_report(&r, scenario);
        assert!(
            r["ok"].as_u64().unwrap() > 0,
            "{scenario} did some work: {r}"
        );
        assert_eq!(r["errors"], 0, "{scenario}: {r}");
        assert_eq!(r["mode"], "closed-loop");
    }

    let race = run(&["--scenario", "bind-race", "--race-jobs", "5"]);
    check_report(&race, "bind-race");
    assert_eq!(race["extra"]["jobs_bound_twice"], 0);
    assert_eq!(race["extra"]["race_jobs"], 5);
    if let Some(reasons) = race["reasons"].as_object() {
        assert!(reasons.keys().all(|k| k == "ALREADY_BOUND"), "{race}");
    }

    let open = run(&["--scenario", "decide-allow", "--rate", "200"]);
    check_report(&open, "decide-allow");
    assert_eq!(open["mode"], "open-loop");
    assert_eq!(open["target_rate"], 200.0);
    let n = open["operations"].as_u64().unwrap();
    assert!(
        (150..=250).contains(&n),
        "about 200 calls in a second at 200/s: {n}"
    );

    let reload = run(&["--scenario", "reload", "--reload-rules", "50"]);
    check_report(&reload, "reload");
    assert_eq!(reload["extra"]["reload_failures"], 0, "{reload}");
    assert!(reload["extra"]["reloads"].as_u64().unwrap() >= 1);
    assert_eq!(reload["errors"], 0);

    let gen_out = Command::new(bin)
        .args(["bench", "gen-policy", "--rules", "20"])
        .output()
        .unwrap();
    let text = String::from_utf8(gen_out.stdout).unwrap();
    assert_eq!(
        gavel::policy::load(&text, "gen.yaml")
            .unwrap()
            .snapshot
            .policy
            .rules()
            .len(),
        20
    );

    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(server.wait().unwrap().success());
}
