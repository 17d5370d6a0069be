//! The request log of a real `gavel serve --log-format json`: one JSON
//! line per request, gRPC or HTTP, reads included, with the method, the
//! operation, identity, job, result or refusal reason, status, duration
//! and the caller's trace id, and never a token or a params value.

use super::helpers::{clients, job, listening_addrs, reason};
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
    let (addr, http) = listening_addrs(&mut server);
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
    // Reads: over gRPC with the caller's trace, and over HTTP.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut get = tonic::Request::new(pb::GetJobRequest {
        job_id: "log-1".into(),
    });
    get.metadata_mut().insert(
        "traceparent",
        format!("00-{trace}-00f067aa0ba902b7-01").parse().unwrap(),
    );
    agent.decision.get_job(get).await.unwrap();
    let http_client = crate::http_client();
    let got = http_client
        .get(format!("http://{http}/api/v1/jobs/log-1"))
        .bearer_auth(token_of("reviewer"))
        .send()
        .await
        .unwrap();
    assert_eq!(got.status(), 200);
    let refused = http_client
        .get(format!("http://{http}/api/v1/jobs/log-1"))
        .bearer_auth("not-a-token-of-anyone")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
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
    assert_eq!(
        decide["fields"]["method"],
        "gavel.v1.DecisionService/Decide"
    );
    assert_eq!(decide["fields"]["status"], 0);
    // FAILED_PRECONDITION.
    assert_eq!(bind["fields"]["status"], 9);
    let method = |m: &str| {
        requests
            .iter()
            .filter(|v| v["fields"]["method"] == m)
            .collect::<Vec<_>>()
    };
    let read = method("gavel.v1.DecisionService/GetJob");
    assert_eq!(read.len(), 1, "{requests:#?}");
    assert_eq!(read[0]["fields"]["identity"], "agent");
    assert_eq!(read[0]["fields"]["job_id"], "log-1");
    assert_eq!(read[0]["fields"]["trace_id"], trace);
    assert!(read[0]["fields"]["op"].is_null());
    let reads = method("GET /api/v1/jobs/{job_id}");
    assert_eq!(reads.len(), 2, "{requests:#?}");
    assert_eq!(reads[0]["fields"]["identity"], "reviewer");
    assert_eq!(reads[0]["fields"]["job_id"], "log-1");
    assert_eq!(reads[0]["fields"]["status"], 200);
    assert!(reads[1]["fields"]["identity"].is_null());
    assert_eq!(reads[1]["fields"]["reason"], "UNAUTHENTICATED");
    assert_eq!(reads[1]["fields"]["status"], 401);
    assert!(reads[1]["fields"]["trace_id"].is_null());
    let cancel = line("cancel");
    assert_eq!(cancel["fields"]["job_id"], "log-1");
    assert!(
        cancel["fields"]["result"].is_string() || cancel["fields"]["reason"].is_string(),
        "{cancel}"
    );
    for secret in [
        token_of("agent"),
        token_of("executor"),
        token_of("reviewer"),
        "not-a-token-of-anyone".into(),
    ] {
        assert!(!log.contains(&secret), "a token in the log");
    }
    assert!(!log.contains("params-value-never-logged"));
}
