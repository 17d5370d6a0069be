//! The `gavel` binary: outputs, JSON shapes and exit codes.

use super::helpers::listening_addr;
use super::root;
use serde_json::Value;
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn gavel(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gavel"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run gavel")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

fn write_temp(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let p = dir.path().join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

const SEED: &str = "tests/fixtures/seed-approval-policy.yaml";

#[test]
fn policy_hash_prints_the_snapshot_id_alone() {
    let o = gavel(&["policy", "hash", SEED]);
    assert!(o.status.success());
    let out = stdout(&o);
    let source = std::fs::read_to_string(root().join(SEED)).unwrap();
    let id = gavel::policy::load(&source, SEED).unwrap().snapshot.id;
    assert_eq!(out, format!("{id}\n"));
    let j = json(&gavel(&["policy", "hash", SEED, "--output", "json"]));
    assert_eq!(j["policy_snapshot"], id.as_str());
}

#[test]
fn policy_check_reports_locations_and_exit_codes() {
    let ok = gavel(&["policy", "check", SEED, "policies/default.yaml"]);
    assert_eq!(ok.status.code(), Some(0), "{}", stdout(&ok));
    assert!(stdout(&ok).contains("policies/default.yaml: ok (15 rules"));

    let dir = tempfile::tempdir().unwrap();
    let bad = write_temp(
        &dir,
        "bad.yaml",
        "version: v1\nrules:\n  - id: a\n    match: {}\n    decision: alow\n",
    );
    let o = gavel(&["policy", "check", &bad]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains(&format!(
            "{bad}:5:15: error[unknown-decision]: unknown decision `alow`"
        )),
        "{}",
        stdout(&o)
    );

    let j = json(&gavel(&["policy", "check", &bad, SEED, "--output", "json"]));
    assert_eq!(j["ok"], false);
    assert_eq!(j["files"][0]["findings"][0]["line"], 5);
    assert_eq!(j["files"][0]["findings"][0]["code"], "unknown-decision");
    assert_eq!(j["files"][1]["ok"], true);

    // Warnings are findings: exit 1 unless allowed.
    let warn = write_temp(
        &dir,
        "warn.yaml",
        "version: v1\nrules:\n  - id: a\n    match: { risk_tags: [x], risk_tags_none: [x] }\n    decision: deny\n",
    );
    assert_eq!(gavel(&["policy", "check", &warn]).status.code(), Some(1));
    assert_eq!(
        gavel(&["policy", "check", &warn, "--allow-warnings"])
            .status
            .code(),
        Some(0)
    );

    let missing = gavel(&["policy", "check", "no/such/file.yaml"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no/such/file.yaml: cannot read"));
}

#[test]
fn policy_explain_json_has_the_documented_shape() {
    let dir = tempfile::tempdir().unwrap();
    let job = write_temp(
        &dir,
        "job.json",
        r#"{"job_id":"job-1","topic":"job.deploy.api","action":"deploy","target":"prod-eu","risk_tags":["prod","write","egress"],"params":{"image":"api:1.2"}}"#,
    );
    let o = gavel(&["policy", "explain", SEED, "--job", &job, "--output", "json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let j = json(&o);
    assert_eq!(j["decision"], "require_approval");
    assert_eq!(j["primary_rule"], "prod-write-gate");
    assert_eq!(
        j["matched_rules"],
        serde_json::json!(["prod-write-gate", "egress-bounded"])
    );
    assert_eq!(j["gates"][0]["approvers"], 1);
    assert_eq!(j["gates"][0]["roles"], serde_json::json!(["approver"]));
    assert_eq!(
        j["gates"][0]["rules"],
        serde_json::json!(["prod-write-gate"])
    );
    assert_eq!(j["constraints"]["max_runtime_sec"], 60);
    assert_eq!(
        j["decision_summary"]["why"],
        "Production writes require human approval"
    );
    assert!(j["decision_summary"]["title"].is_string());
    assert!(j["decision_summary"]["next_effect"].is_string());
    let hash = gavel(&["job", "hash", &job]);
    assert_eq!(j["job_hash"].as_str().unwrap(), stdout(&hash).trim());
    assert!(
        j["policy_snapshot"]
            .as_str()
            .unwrap()
            .starts_with("cfg:system:policy#sha256:")
    );
    let rules = j["rules"].as_array().unwrap();
    let read = rules.iter().find(|r| r["rule"] == "allow-read").unwrap();
    assert_eq!(read["matched"], false);
    assert_eq!(read["failures"][0]["matcher"], "topics");
    let pay = rules.iter().find(|r| r["rule"] == "payment-gate").unwrap();
    assert_eq!(pay["failures"][0]["matcher"], "risk_tags");

    // Nothing matched: the primary rule is `default`.
    let none = write_temp(&dir, "none.json", r#"{"topic":"job.x.frob"}"#);
    let j = json(&gavel(&[
        "policy", "explain", SEED, "--job", &none, "--output", "json",
    ]));
    assert_eq!(j["primary_rule"], "default");
    assert_eq!(j["decision"], "require_approval");

    // Text output is readable and names the decision.
    let text = stdout(&gavel(&["policy", "explain", SEED, "--job", &job]));
    assert!(
        text.starts_with("decision:    require_approval (primary rule `prod-write-gate`)"),
        "{text}"
    );

    // A principal matcher sees --principal.
    let pol = write_temp(
        &dir,
        "p.yaml",
        "version: v1\nrules:\n  - id: bots\n    match: { principal: [\"bot-*\"] }\n    decision: allow\n",
    );
    let j = json(&gavel(&[
        "policy",
        "explain",
        &pol,
        "--job",
        &none,
        "--principal",
        "bot-1",
        "--output",
        "json",
    ]));
    assert_eq!(j["decision"], "allow");

    // A broken job names the field and exits 1.
    let bad = write_temp(&dir, "bad.json", r#"{"topic":"x","risk_tags":"prod"}"#);
    let o = gavel(&["policy", "explain", SEED, "--job", &bad]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("job.risk_tags: must be a list of strings")
    );
}

#[test]
fn job_hash_reads_files_and_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let text = r#"{"topic":"t","risk_tags":["b","a"],"params":{"x":[1,2.50]}}"#;
    let f = write_temp(&dir, "j.json", text);
    let from_file = stdout(&gavel(&["job", "hash", &f]));
    assert_eq!(from_file.len(), 65, "64 hex digits and a newline");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gavel"))
        .args(["job", "hash", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(stdout(&o), from_file);
    let j = json(&gavel(&[
        "job",
        "hash",
        &f,
        "--canonical",
        "--output",
        "json",
    ]));
    assert_eq!(
        j["canonical_job"],
        r#"{"action":"","attributes":{},"params":{"x":[1,2.5]},"proposal":null,"risk_tags":["a","b"],"target":"","tenant":"","topic":"t"}"#
    );
    let dup = write_temp(&dir, "dup.json", r#"{"topic":"a","topic":"b"}"#);
    let o = gavel(&["job", "hash", &dup]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("duplicate key `topic`"));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(gavel(&["policy"]).status.code(), Some(2));
    assert_eq!(gavel(&["policy", "explain", SEED]).status.code(), Some(2));
    assert_eq!(gavel(&["nope"]).status.code(), Some(2));
    assert_eq!(gavel(&["policy", "check"]).status.code(), Some(2));
    assert_eq!(gavel(&["--version"]).status.code(), Some(0));
}

#[test]
fn policy_test_runs_suites_and_writes_junit() {
    let o = gavel(&["policy", "test", "policies/", "--output", "json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let j = json(&o);
    assert_eq!(j["failed"], 0);
    assert!(j["passed"].as_u64().unwrap() >= 30);

    let dir = tempfile::tempdir().unwrap();
    let policy = std::fs::read_to_string(root().join("policies/default.yaml")).unwrap();
    write_temp(&dir, "default.yaml", &policy);
    std::fs::create_dir(dir.path().join("tests")).unwrap();
    write_temp(
        &dir,
        "tests/s.yaml",
        "name: mixed\npolicy: ../default.yaml\ncases:\n  - name: passes\n    job: { action: read }\n    expect: { decision: allow }\n  - name: fails <on purpose>\n    job: { action: rotate, target: master_key }\n    expect: { decision: allow }\n",
    );
    let junit = dir.path().join("junit.xml");
    let o = gavel(&[
        "policy",
        "test",
        dir.path().to_str().unwrap(),
        "--junit",
        junit.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let text = stdout(&o);
    assert!(text.contains("ok    passes"), "{text}");
    assert!(text.contains("FAIL  fails <on purpose>"), "{text}");
    assert!(
        text.contains("decision: expected allow, got deny"),
        "{text}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(r#"<testsuites name="gavel policy test" tests="2" failures="1" errors="0">"#),
        "{xml}"
    );
    assert!(
        xml.contains(r#"<testcase name="fails &lt;on purpose&gt;""#),
        "{xml}"
    );
    assert!(
        xml.contains("<failure message=\"decision: expected allow, got deny"),
        "{xml}"
    );

    let empty = tempfile::tempdir().unwrap();
    assert_eq!(
        gavel(&["policy", "test", empty.path().to_str().unwrap()])
            .status
            .code(),
        Some(1)
    );
}

/// Every `cargo run … -- ARGS` line in the README's shell blocks works as
/// written (run with the test-built binary) and exits 0.
#[test]
fn the_readme_commands_work() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let mut in_sh = false;
    let mut ran = 0;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = line == "```sh";
            continue;
        }
        if !in_sh || !line.starts_with("cargo run") {
            continue;
        }
        let args: Vec<&str> = line
            .split_once(" -- ")
            .map(|(_, a)| a.split_whitespace().collect())
            .unwrap_or_default();
        assert!(!args.is_empty(), "{line}");
        if args[0] == "serve" {
            // The server runs until stopped: the quickstart test covers it.
            continue;
        }
        let o = gavel(&args);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{line}\n{}{}",
            stdout(&o),
            String::from_utf8_lossy(&o.stderr)
        );
        ran += 1;
    }
    assert!(ran >= 6, "found {ran} commands");
    // The first command of the README shows a production deploy waiting for people.
    let o = gavel(&[
        "policy",
        "explain",
        "policies/default.yaml",
        "--job",
        "examples/jobs/prod-deploy.json",
        "--output",
        "json",
    ]);
    let j = json(&o);
    assert_eq!(j["decision"], "require_approval");
    assert_eq!(j["gates"].as_array().unwrap().len(), 2);
    let drop = json(&gavel(&[
        "policy",
        "explain",
        "policies/default.yaml",
        "--job",
        "examples/jobs/drop-production.json",
        "--output",
        "json",
    ]));
    assert_eq!(drop["decision"], "deny");
    let read = json(&gavel(&[
        "policy",
        "explain",
        "policies/default.yaml",
        "--job",
        "examples/jobs/read-file.json",
        "--output",
        "json",
    ]));
    assert_eq!(read["decision"], "allow");
}

/// The README's quickstart, run as written by bash against a real
/// `gavel serve --dev` process (on a free port, in a scratch directory).
#[test]
fn the_readme_quickstart_runs_against_a_real_server() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let after = readme
        .split("<!-- quickstart -->")
        .nth(1)
        .expect("quickstart marker");
    let block = after
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("quickstart block");
    assert!(block.contains("gavel bind"), "{block}");

    let dir = tempfile::tempdir().unwrap();
    for link in ["examples", "policies"] {
        std::os::unix::fs::symlink(root().join(link), dir.path().join(link)).unwrap();
    }
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_gavel"));
    let mut server = Command::new(&bin)
        .args([
            "serve",
            "--dev",
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let addr = listening_addr(&mut server);

    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = Command::new("bash")
        .args(["-e", "-o", "pipefail", "-c", block])
        .current_dir(dir.path())
        .env("PATH", path)
        .env("GAVEL_SERVER", format!("http://{addr}"))
        .env_remove("GAVEL_TOKEN")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&run.stdout).into_owned();
    let err = String::from_utf8_lossy(&run.stderr).into_owned();

    // Refusals exit 1 and name their reason.
    let refusals = [
        (
            "GAVEL_TOKEN=$(gavel token dev dev-executor) gavel bind job-pay-7 --job examples/jobs/vendor-payment.json --snapshot \"$(GAVEL_TOKEN=$(gavel token dev dev-agent) gavel get job-pay-7 --field policy_snapshot)\"",
            "ALREADY_BOUND",
        ),
        (
            "GAVEL_TOKEN=$(gavel token dev dev-agent) gavel approve job-pay-7 --reason mine",
            "PERMISSION_DENIED",
        ),
        (
            "GAVEL_TOKEN=$(gavel token dev dev-executor) gavel bind job-pay-7 --job-hash 0000000000000000000000000000000000000000000000000000000000000000 --snapshot x",
            "HASH_MISMATCH",
        ),
    ];
    let path2 = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for (cmd, want) in refusals {
        let o = Command::new("bash")
            .args(["-c", cmd])
            .current_dir(dir.path())
            .env("PATH", &path2)
            .env("GAVEL_SERVER", format!("http://{addr}"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{cmd}");
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(&format!("error: {want}: ")), "{cmd}: {e}");
    }

    // The bind's receipt verifies offline against `gavel keys`.
    let keys = Command::new(&bin)
        .args(["keys"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        keys.status.success(),
        "{}",
        String::from_utf8_lossy(&keys.stderr)
    );
    std::fs::write(dir.path().join("jwks.json"), &keys.stdout).unwrap();
    let receipt = out
        .lines()
        .find_map(|l| l.strip_prefix("receipt:     "))
        .expect("bind prints its receipt")
        .to_owned();
    let v = Command::new(&bin)
        .args([
            "receipt",
            "verify",
            &receipt,
            "--jwks",
            "jwks.json",
            "--output",
            "json",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    let payload: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(payload["job_id"], "job-pay-7");
    assert_eq!(payload["approvers"], serde_json::json!(["alice", "bob"]));
    // Alter one character of the payload.
    let dot = receipt.find('.').unwrap() + 5;
    let swapped = if &receipt[dot..dot + 1] == "A" {
        "B"
    } else {
        "A"
    };
    let forged = format!("{}{swapped}{}", &receipt[..dot], &receipt[dot + 1..]);
    let v = Command::new(&bin)
        .args(["receipt", "verify", &forged, "--jwks", "jwks.json"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(v.status.code(), Some(1));

    // Stop the server we started, by its pid, and let it drain.
    let pid = server.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let status = server.wait().unwrap();

    assert!(run.status.success(), "quickstart failed:\n{out}\n{err}");
    assert!(
        out.contains("decision: require_approval (rule `payment-gate`)"),
        "{out}"
    );
    assert!(out.contains("state:    approved"), "{out}");
    assert!(out.contains("bound:       job-pay-7"), "{out}");
    assert!(out.contains("approved by: bob"), "{out}");
    assert!(out.contains("bind          dev-executor"), "{out}");
    assert!(out.contains("chain main: "), "{out}");
    assert!(out.contains(", ok (head "), "{out}");
    // `gavel stats` counts the quickstart's job and lists it among the
    // slowest decisions, under its rule.
    assert!(out.contains("Jobs decided in the last 1d: 1"), "{out}");
    assert!(out.contains("sent for approval: approved 1,"), "{out}");
    let slow = out
        .lines()
        .skip_while(|l| !l.starts_with("Slowest decisions:"))
        .nth(1)
        .unwrap_or_default();
    assert!(
        slow.contains("job-pay-7") && slow.contains("payment-gate") && slow.contains("approved"),
        "{out}"
    );
    assert!(
        status.success(),
        "the server exits cleanly on SIGTERM: {status:?}"
    );
}

/// Client commands name refusal reasons and exit 1.
#[test]
fn client_refusals_exit_1_with_their_reason() {
    let o = gavel(&["get", "x", "--server", "http://127.0.0.1:9", "--token", "t"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot reach http://127.0.0.1:9"));
    let o = Command::new(env!("CARGO_BIN_EXE_gavel"))
        .args(["get", "x"])
        .env_remove("GAVEL_TOKEN")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no token"));
    let t = gavel(&["token", "new", "--output", "json"]);
    let j = json(&t);
    let token = j["token"].as_str().unwrap();
    assert_eq!(j["tokens_entry"], gavel::identity::token_hash(token));
}

/// `gavel serve` reads its TOML config, lets flags and GAVEL_* variables
/// override it, and refuses unsafe or unusable setups with a clear message.
#[test]
fn serve_configuration_and_refusals() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_gavel");
    let token = "cfg-test-token";
    let config = format!(
        "grpc_listen = \"127.0.0.1:1\"\ndatabase_url = \"sqlite://{db}\"\npolicy = \"{policy}\"\nreceipt_key = \"{key}\"\n[[identities]]\nname = \"ops\"\nroles = [\"operator\"]\ntokens = [\"{hash}\"]\n[[identities]]\nname = \"r1\"\nroles = [\"reviewer\", \"finance-approver\", \"security-approver\", \"oncall\", \"service-owner\"]\n[[identities]]\nname = \"r2\"\nroles = [\"reviewer\", \"finance-approver\", \"security-approver\"]\n",
        db = dir.path().join("g.db").display(),
        policy = root().join("policies/default.yaml").display(),
        key = dir.path().join("receipt.key").display(),
        hash = gavel::identity::token_hash(token),
    );
    let cfg = write_temp(&dir, "gavel.toml", &config);

    // The environment overrides the file's (unusable) port.
    let mut server = Command::new(bin)
        .args(["serve", "--config", &cfg])
        .env("GAVEL_GRPC_LISTEN", "127.0.0.1:0")
        .env("GAVEL_HTTP_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr = listening_addr(&mut server);
    let show = gavel(&[
        "policy",
        "list",
        "--server",
        &format!("http://{addr}"),
        "--token",
        token,
    ]);
    assert!(
        stdout(&show).contains("active  cfg:default:policy#sha256:"),
        "{}",
        stdout(&show)
    );
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(server.wait().unwrap().success());

    let refusals: &[(&[&str], &str, &str)] = &[
        (
            &["serve", "--dev", "--grpc-listen", "0.0.0.0:0"],
            "",
            "--dev listens on loopback only",
        ),
        (
            &[
                "serve",
                "--dev",
                "--grpc-listen",
                "127.0.0.1:0",
                "--http-listen",
                "0.0.0.0:0",
            ],
            "",
            "--dev listens on loopback only",
        ),
        (
            &[
                "serve",
                "--grpc-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ],
            "",
            "no identities are configured",
        ),
        (
            &["serve", "--config", "no-such.toml"],
            "",
            "no-such.toml: cannot read",
        ),
    ];
    for (args, _, want) in refusals {
        let o = Command::new(bin)
            .args(*args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.contains(want), "{args:?}: {e}");
    }
    let bad = write_temp(&dir, "bad.toml", "grpc_lisen = \"127.0.0.1:0\"\n");
    let o = Command::new(bin)
        .args(["serve", "--config", &bad])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown field `grpc_lisen`"));
    // A policy whose gate nobody configured can fill is refused at start.
    let few = write_temp(
        &dir,
        "few.toml",
        &config
            .replace(
                "[[identities]]\nname = \"r2\"",
                "[[identities]]\nname = \"r2x\"\n[[identities]]\nname = \"unused\"",
            )
            .replace(
                "roles = [\"reviewer\", \"finance-approver\", \"security-approver\"]\n",
                "roles = []\n",
            ),
    );
    let o = Command::new(bin)
        .args([
            "serve",
            "--config",
            &few,
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("GATE_UNSATISFIABLE"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The README's HTTP quickstart (the article's curl commands with a token
/// header), run by bash against a real `gavel serve --dev`.
#[test]
fn the_readme_http_quickstart_runs_against_a_real_server() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let block = readme
        .split("<!-- quickstart-http -->")
        .nth(1)
        .and_then(|a| a.split("```sh\n").nth(1))
        .and_then(|b| b.split("```").next())
        .expect("HTTP quickstart block");
    let dir = tempfile::tempdir().unwrap();
    for link in ["examples", "policies"] {
        std::os::unix::fs::symlink(root().join(link), dir.path().join(link)).unwrap();
    }
    let bin = std::path::PathBuf::from(env!("CARGO_BIN_EXE_gavel"));
    let mut server = Command::new(&bin)
        .args([
            "serve",
            "--dev",
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (_, http) = crate::helpers::listening_addrs(&mut server);
    let block = block.replace("http://127.0.0.1:8081", &format!("http://{http}"));
    let path = format!(
        "{}:{}",
        bin.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run = Command::new("bash")
        .args(["-e", "-o", "pipefail", "-c", &block])
        .current_dir(dir.path())
        .env("PATH", path)
        .output()
        .unwrap();
    Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    let stopped = server.wait().unwrap();
    let out = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert!(
        stopped.success(),
        "the server did not drain and exit cleanly"
    );
    // Five JSON answers, one per curl.
    let answers: Vec<serde_json::Value> = serde_json::Deserializer::from_str(&out)
        .into_iter()
        .map(|v| v.unwrap())
        .collect();
    assert_eq!(answers.len(), 5, "{out}");
    assert_eq!(answers[0]["decision"], "REQUIRE_APPROVAL");
    let item = &answers[1]["items"][0];
    assert_eq!(item["job"]["id"], "job-deploy-42");
    assert_eq!(item["job"]["state"], "PENDING");
    assert_eq!(item["job_hash"], answers[0]["job_hash"]);
    assert_eq!(answers[2]["approvals"][0]["approver"], "alice");
    assert_eq!(answers[3]["job"]["state"], "REJECTED");
    assert_eq!(answers[3]["resolved_by"], "bob");
    let kinds: Vec<&str> = answers[4]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["policy", "approval", "rejection"]);
}
