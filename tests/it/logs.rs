//! The request log of a real `gavel serve --log-format json`: one JSON
//! line per Decide, Bind and change with the operation, identity, job,
//! result or refusal reason and duration, and never a token or a params
//! value.

use super::helpers::{clients, job, listening_addr, reason};
use gavel::proto::v1 as pb;
use serde_json::Value;
use std::io::Read;
use std::process::{Command, Stdio};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_is_one_json_line_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let token_of = |name: &str| format!("log-test-token-of-{name}");
    std::fs::write(
        dir.path().join("policy.yaml"),
        "version: v1\nname: logs\ndefaults:\n  decision: require_approval\n  approval: { approvers: 1, roles: [reviewer] }\nrules: []\n",
    )
    .unwrap();
    let mut config = format!(
        "database_url = \"sqlite://{}\"\npolicy = \"{}\"\nreceipt_key = \"{}\"\n",
        dir.path().join("gavel.db").display(),
        dir.path().join("policy.yaml").display(),
        dir.path().join("receipt.key").display(),
    );
    for (name, role) in [
        ("agent", "agent"),
        ("executor", "executor"),
        ("reviewer", "reviewer"),
    ] {
        config.push_str(&format!(
            "[[identities]]\nname = \"{name}\"\nroles = [\"{role}\"]\ntokens = [\"{}\"]\n",
            gavel::identity::token_hash(&token_of(name))
        ));
    }
    let path = dir.path().join("gavel.toml");
    std::fs::write(&path, config).unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_gavel"))
        .args(["serve", "--config"])
        .arg(&path)
        .args(["--log-format", "json"])
        .args([
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Drained all along, so the server never blocks on a full pipe.
    let mut stderr = server.stderr.take().unwrap();
    let drained = std::thread::spawn(move || {
        let mut all = String::new();
        let _ = stderr.read_to_string(&mut all);
        all
    });
    let addr = listening_addr(&mut server);
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut agent = clients(channel.clone(), Some(token_of("agent")));
    let mut exec = clients(channel, Some(token_of("executor")));
    let mut j = job("log-1", "read", &[]);
    j.params = Some(prost_types::Struct {
        fields: [(
            "password".to_string(),
            prost_types::Value {
                kind: Some(prost_types::value::Kind::StringValue(
                    "params-value-never-logged".into(),
                )),
            },
        )]
        .into(),
    });
    let d = agent
        .decision
        .decide(pb::DecideRequest { job: Some(j) })
        .await
        .unwrap()
        .into_inner();
    let refused = exec
        .decision
        .bind(pb::BindRequest {
            job_id: "log-1".into(),
            content: Some(pb::bind_request::Content::JobHash("0".repeat(64))),
            policy_snapshot: d.policy_snapshot.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "HASH_MISMATCH");
    let _ = agent
        .decision
        .cancel(pb::CancelRequest {
            job_id: "log-1".into(),
            reason: "not needed".into(),
        })
        .await;
    let _ = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status();
    server.wait().unwrap();
    let log = drained.join().unwrap();

    let requests: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "gavel::request")
        .collect();
    let line = |op: &str| {
        requests
            .iter()
            .find(|v| v["fields"]["op"] == op)
            .unwrap_or_else(|| panic!("no `{op}` line in {requests:#?}"))
    };
    let decide = line("decide");
    assert_eq!(decide["fields"]["identity"], "agent");
    assert_eq!(decide["fields"]["job_id"], "log-1");
    // The decision the caller got, by its wire name.
    let wire = pb::Decision::try_from(d.decision).unwrap().as_str_name();
    let said = decide["fields"]["result"].as_str().unwrap();
    assert_eq!(format!("DECISION_{}", said.to_uppercase()), wire);
    assert!(decide["fields"]["duration_ms"].as_f64().is_some());
    let bind = line("bind");
    assert_eq!(bind["fields"]["identity"], "executor");
    assert_eq!(bind["fields"]["reason"], "HASH_MISMATCH");
    let cancel = line("cancel");
    assert_eq!(cancel["fields"]["job_id"], "log-1");
    assert!(
        cancel["fields"]["result"].is_string() || cancel["fields"]["reason"].is_string(),
        "{cancel}"
    );
    for secret in [token_of("agent"), token_of("executor")] {
        assert!(!log.contains(&secret), "a token in the log");
    }
    assert!(!log.contains("params-value-never-logged"));
}
