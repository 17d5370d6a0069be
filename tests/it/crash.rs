//! Crash trials: a mixed load (decides, approvals, binds, outcome reports,
//! policy reloads) against a real `gavel serve`, every acknowledged answer
//! recorded; `kill -9` after a random number of acknowledgements; restart
//! on the same database; then everything acknowledged must be there,
//! nothing unacknowledged half there, no job bound twice, every pending
//! notification still in the outbox, and the audit chain must verify.
//!
//! `GAVEL_CRASH_TRIALS` (default 2 per backend) sets the number of trials
//! and `GAVEL_CRASH_SEED` replays one; `benches/crash.sh` runs many.

use super::helpers::{Caller, Rng, ServeProcess as Server, clients, job, reason, token};
use crate::store::Backend;
use gavel::proto::v1 as pb;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

pub(super) const POLICY: &str = "version: v1\nname: crash\ndefaults:\n  decision: require_approval\n  approval: { approvers: 1, roles: [reviewer] }\nrules:\n  - id: reads\n    match: { action: [read] }\n    decision: allow\n";

/// What the server acknowledged.
#[derive(Default)]
pub(super) struct Acked {
    /// Job id → (job hash, decision, snapshot).
    pub decided: BTreeMap<String, (String, i32, String)>,
    /// Jobs whose (single) approval was acknowledged.
    pub approved: BTreeSet<String>,
    /// Job id → bind id.
    pub bound: BTreeMap<String, String>,
    pub reported: BTreeSet<String>,
    /// Snapshot ids of acknowledged reloads.
    pub reloads: Vec<String>,
}

/// Whether a failed call was a refusal (the server answered) rather than
/// the server going away.
fn answered(s: &tonic::Status) -> bool {
    gavel::service::convert::error_detail(s).is_some()
}

/// A load shared by its workers: what was acknowledged, and what ends it.
pub(super) struct Load {
    pub acked: Mutex<Acked>,
    /// Acknowledgements so far.
    pub acks: tokio::sync::watch::Sender<usize>,
    /// Calls answered UNAVAILABLE so far (the database was away).
    pub unavailable: tokio::sync::watch::Sender<usize>,
    /// Set to end the workers (fault trials).
    pub stop: std::sync::atomic::AtomicBool,
    /// Crash trials: the acknowledgement that kills this process id.
    pub kill: Option<(usize, u32)>,
}

impl Load {
    pub fn new(kill: Option<(usize, u32)>) -> Arc<Load> {
        Arc::new(Load {
            acked: Mutex::default(),
            acks: tokio::sync::watch::channel(0).0,
            unavailable: tokio::sync::watch::channel(0).0,
            stop: Default::default(),
            kill,
        })
    }

    /// Waits until `n` more acknowledgements than `from` came in.
    pub async fn acks_past(&self, from: usize, n: usize) {
        let _ = self.acks.subscribe().wait_for(|a| *a >= from + n).await;
    }
}

/// One worker: random operations until the server dies (crash trials) or
/// the load is stopped (fault trials, where calls answered UNAVAILABLE are
/// counted and the worker goes on).
pub(super) async fn worker(server_addr: String, seed: u64, n: usize, load: Arc<Load>) {
    let connect = |who: &'static str| {
        let addr = server_addr.clone();
        async move {
            let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
                .unwrap()
                .connect()
                .await
                .unwrap();
            clients(channel, Some(token(who)))
        }
    };
    let (mut agent, mut alice, mut exec, mut op) = (
        connect("agent-1").await,
        connect("alice").await,
        connect("executor").await,
        connect("operator").await,
    );
    let mut rng = Rng(seed);
    let acked = &load.acked;
    let ack = || {
        let mut count = 0;
        load.acks.send_modify(|a| {
            *a += 1;
            count = *a;
        });
        // The acknowledgement that reaches `kill_at` pulls the plug.
        if let Some((kill_at, pid)) = load.kill
            && count == kill_at
        {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    };
    for i in 0..20_000_000 {
        if load.stop.load(Ordering::SeqCst) {
            return;
        }
        let id = format!("w{n}-{i}");
        let r = rng.below(20);
        let failed = match r {
            0..=8 => {
                let action = if r < 5 { "read" } else { "deploy" };
                match agent
                    .decision
                    .decide(pb::DecideRequest {
                        job: Some(job(&id, action, &[])),
                    })
                    .await
                {
                    Ok(d) => {
                        let d = d.into_inner();
                        acked
                            .lock()
                            .unwrap()
                            .decided
                            .insert(id, (d.job_hash, d.decision, d.policy_snapshot));
                        ack();
                        None
                    }
                    Err(s) => Some(s),
                }
            }
            9..=11 => {
                let pick = {
                    let a = acked.lock().unwrap();
                    let open: Vec<&String> = a
                        .decided
                        .iter()
                        .filter(|(j, d)| {
                            d.1 == pb::Decision::RequireApproval as i32 && !a.approved.contains(*j)
                        })
                        .map(|(j, _)| j)
                        .collect();
                    (!open.is_empty()).then(|| rng.pick(&open).to_string())
                };
                let Some(j) = pick else { continue };
                match alice
                    .approval
                    .approve(pb::ApproveRequest {
                        job_id: j.clone(),
                        reason: "fine".into(),
                        ..Default::default()
                    })
                    .await
                {
                    Ok(_) => {
                        acked.lock().unwrap().approved.insert(j);
                        ack();
                        None
                    }
                    Err(s) => Some(s),
                }
            }
            12..=15 => {
                let pick = {
                    let a = acked.lock().unwrap();
                    let ready: Vec<(&String, &(String, i32, String))> = a
                        .decided
                        .iter()
                        .filter(|(j, d)| {
                            (d.1 == pb::Decision::Allow as i32 || a.approved.contains(*j))
                                && !a.bound.contains_key(*j)
                        })
                        .collect();
                    (!ready.is_empty()).then(|| {
                        let (j, d) = rng.pick(&ready);
                        (j.to_string(), d.0.clone(), d.2.clone())
                    })
                };
                let Some((j, hash, snapshot)) = pick else {
                    continue;
                };
                match exec
                    .decision
                    .bind(pb::BindRequest {
                        job_id: j.clone(),
                        content: Some(pb::bind_request::Content::JobHash(hash)),
                        policy_snapshot: snapshot,
                    })
                    .await
                {
                    Ok(b) => {
                        acked
                            .lock()
                            .unwrap()
                            .bound
                            .insert(j, b.into_inner().bind_id);
                        ack();
                        None
                    }
                    Err(s) => Some(s),
                }
            }
            16..=18 => {
                let pick = {
                    let a = acked.lock().unwrap();
                    let done: Vec<(&String, &String)> = a
                        .bound
                        .iter()
                        .filter(|(j, _)| !a.reported.contains(*j))
                        .collect();
                    (!done.is_empty()).then(|| {
                        let (j, b) = rng.pick(&done);
                        (j.to_string(), b.to_string())
                    })
                };
                let Some((j, bind_id)) = pick else { continue };
                match exec
                    .decision
                    .report_outcome(pb::ReportOutcomeRequest {
                        job_id: j.clone(),
                        bind_id,
                        outcome: pb::Outcome::Succeeded as i32,
                        detail: "ran".into(),
                    })
                    .await
                {
                    Ok(_) => {
                        acked.lock().unwrap().reported.insert(j);
                        ack();
                        None
                    }
                    Err(s) => Some(s),
                }
            }
            _ => {
                let source = format!("{POLICY}# reload {id}\n");
                match op
                    .policy
                    .reload_policy(pb::ReloadPolicyRequest {
                        source,
                        ..Default::default()
                    })
                    .await
                {
                    Ok(r) => {
                        let id = r.into_inner().snapshot.map(|s| s.id).unwrap_or_default();
                        acked.lock().unwrap().reloads.push(id);
                        ack();
                        None
                    }
                    Err(s) => Some(s),
                }
            }
        };
        match failed {
            // The database is away: the server says so, and is retried.
            Some(s) if load.kill.is_none() && s.code() == tonic::Code::Unavailable => {
                assert_eq!(reason(&s), "UNAVAILABLE", "{s:?}");
                load.unavailable.send_modify(|u| *u += 1);
            }
            // Two workers racing for one job: one is refused, and goes on.
            // After an UNAVAILABLE whose write did commit, the retry is
            // refused the same way.
            Some(s) if answered(&s) => {
                let r = reason(&s);
                assert!(
                    [
                        "ALREADY_BOUND",
                        "NOT_PENDING",
                        "ALREADY_APPROVED",
                        "NOT_BOUND"
                    ]
                    .contains(&r.as_str()),
                    "unexpected refusal {r}: {s:?}"
                );
            }
            // The server is gone.
            Some(s) if load.kill.is_some() => {
                let _ = s;
                return;
            }
            Some(s) => panic!("worker {n}: the server failed: {s:?}"),
            None => {}
        }
    }
    panic!("worker {n} never saw the server die");
}

/// One trial on a fresh database; returns the acknowledged operations.
async fn trial(b: Backend, seed: u64) -> Option<usize> {
    let (db_url, db_dir) = crate::store::fresh_url(b, "crash").await?;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("policy.yaml"), POLICY).unwrap();
    let mut config = format!(
        "database_url = \"{db_url}\"\npolicy = \"{}\"\nreceipt_key = \"{}\"\n",
        dir.path().join("policy.yaml").display(),
        dir.path().join("receipt.key").display(),
    );
    for (name, role) in [
        ("agent-1", "agent"),
        ("executor", "executor"),
        ("alice", "reviewer"),
        ("operator", "operator"),
        ("auditor", "auditor"),
    ] {
        config.push_str(&format!(
            "[[identities]]\nname = \"{name}\"\nroles = [\"{role}\"]\ntokens = [\"{}\"]\n",
            gavel::identity::token_hash(&token(name))
        ));
    }
    let path = dir.path().join("gavel.toml");
    std::fs::write(&path, config).unwrap();

    let mut rng = Rng(seed);
    let kill_at = 30 + rng.below(300) as usize;
    let mut server = Server::start(&path, &[], "error");
    let load = Load::new(Some((kill_at, server.child.id())));
    let workers: Vec<_> = (0..3)
        .map(|n| {
            tokio::spawn(worker(
                server.addr.clone(),
                worker_seed(seed, n),
                n,
                load.clone(),
            ))
        })
        .collect();
    for w in workers {
        w.await.unwrap();
    }
    // Killed: reap it, then start again on the same database.
    let _ = server.child.wait();
    let server = Server::start(&path, &[], "error");
    let mut agent = server.as_("agent-1").await;
    agent
        .decision
        .decide(pb::DecideRequest {
            job: Some(job("after-restart", "read", &[])),
        })
        .await
        .expect("the restarted server decides");
    let mut server = server;
    server.signal("-TERM");

    let acked = std::mem::take(&mut *load.acked.lock().unwrap());
    check(&db_url, &acked, &format!("seed {seed}")).await;
    drop(db_dir);
    Some(acked.count())
}

/// Each worker's own seed.
pub(super) fn worker_seed(seed: u64, n: usize) -> u64 {
    seed.wrapping_add(n as u64 + 1)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        | 1
}

impl Acked {
    pub fn count(&self) -> usize {
        self.decided.len()
            + self.approved.len()
            + self.bound.len()
            + self.reported.len()
            + self.reloads.len()
    }
}

/// Everything acknowledged is in the database at `db_url`, nothing is half
/// there, no job is bound twice, every pending notification is still in
/// the outbox, and the audit log verifies. `seed` labels the failures.
pub(super) async fn check(db_url: &str, acked: &Acked, seed: &str) {
    let store = gavel::store::open(db_url, "crash-check").await.unwrap();
    let mut lost = Vec::new();
    for (id, (hash, decision, snapshot)) in &acked.decided {
        match store.job(id).await.unwrap() {
            None => lost.push(format!("decision of {id}")),
            Some(r) => {
                assert_eq!(r.job_hash.as_str(), hash, "{id}");
                assert_eq!(r.snapshot_id.as_str(), snapshot, "{id}");
                let tier = pb::Decision::try_from(*decision).unwrap().as_str_name();
                assert_eq!(
                    format!("DECISION_{}", r.evaluation.decision.as_str().to_uppercase()),
                    tier,
                    "{id}"
                );
            }
        }
    }
    for id in &acked.approved {
        let r = store.job(id).await.unwrap().unwrap();
        if !r.approvals.iter().any(|a| a.approver == "alice") {
            lost.push(format!("approval of {id}"));
        }
    }
    for (id, bind_id) in &acked.bound {
        let r = store.job(id).await.unwrap().unwrap();
        if r.bind_id.as_deref() != Some(bind_id.as_str()) {
            lost.push(format!("bind of {id}"));
        }
    }
    for id in &acked.reported {
        let r = store.job(id).await.unwrap().unwrap();
        if r.state.as_str() != "succeeded" {
            lost.push(format!("outcome of {id}"));
        }
    }
    let snapshots: BTreeSet<String> = store
        .snapshots(None)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id.as_str().to_owned())
        .collect();
    for id in &acked.reloads {
        if !snapshots.contains(id) {
            lost.push(format!("reload {id}"));
        }
    }
    assert!(lost.is_empty(), "{seed}: lost {lost:?}");

    // Nothing half there: every job's record and its audit story agree
    // (one decision, its approvals, at most one bind), acknowledged or not.
    let mut story: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for chain in store.chains().await.unwrap() {
        let page = store.audit_page(&chain, 0, 1_000_000).await.unwrap();
        for e in page.into_iter().filter(|e| !e.job_id.is_empty()) {
            story.entry(e.job_id).or_default().push(e.kind);
        }
    }
    for (id, kinds) in &story {
        let count = |k: &str| kinds.iter().filter(|x| *x == k).count();
        let r = store
            .job(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{seed}: {id} has audit entries and no record"));
        assert_eq!(count("decision"), 1, "{seed}: {id} {kinds:?}");
        assert_eq!(
            count("approval"),
            r.approvals.len(),
            "{seed}: {id} {kinds:?}"
        );
        assert!(count("bind") <= 1, "{seed}: {id} bound twice");
        assert_eq!(count("bind") == 1, r.bind_id.is_some(), "{seed}: {id}");
        assert_eq!(
            count("outcome") == 1,
            matches!(r.state.as_str(), "succeeded" | "failed"),
            "{seed}: {id}"
        );
    }
    // Every pending decision's notification is still in the outbox (no
    // worker runs here, so none was delivered).
    let outbox = store.outbox(1_000_000).await.unwrap();
    for (id, (_, decision, _)) in &acked.decided {
        if *decision == pb::Decision::RequireApproval as i32 {
            assert!(
                outbox.iter().any(
                    |m| &m.job_id == id && m.kind == gavel::approval::NotificationKind::Pending
                ),
                "{seed}: the pending notification of {id} is gone"
            );
        }
    }
    // And the log verifies, straight from the database.
    let o = Command::new(env!("CARGO_BIN_EXE_gavel"))
        .args(["audit", "verify", "--database-url", db_url])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{seed}: {}",
        String::from_utf8_lossy(&o.stdout)
    );
}

async fn kill_minus_nine_loses_nothing_acknowledged(b: Backend) {
    let trials: u64 = std::env::var("GAVEL_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let base: u64 = match std::env::var("GAVEL_CRASH_SEED") {
        Ok(v) => v.parse().expect("GAVEL_CRASH_SEED is a number"),
        Err(_) => {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        }
    };
    let mut total = 0;
    for t in 0..trials {
        let seed = base.wrapping_add(t);
        let Some(acked) = trial(b, seed).await else {
            return;
        };
        total += acked;
    }
    // Read by benches/crash.sh.
    eprintln!(
        "crash trials: backend {b:?}, trials {trials}, acknowledged operations {total}, lost 0 (seeds {base}..)"
    );
}

crate::on_both_backends!(crash_trials, kill_minus_nine_loses_nothing_acknowledged);
