//! `gavel bench`: a gRPC load generator on the generated tonic clients.
//!
//! Closed loop by default (`concurrency` calls in flight over `connections`
//! HTTP/2 connections); with `rate` it runs open loop: calls are scheduled
//! at fixed intervals and latency is measured from the scheduled start, so a
//! slow server cannot hide its queueing (no coordinated omission).
//! Latencies go into an HDR histogram; every gRPC status and refusal reason
//! is counted.

use crate::proto::v1 as pb;
use crate::proto::v1::approval_service_client::ApprovalServiceClient;
use crate::proto::v1::decision_service_client::DecisionServiceClient;
use crate::proto::v1::policy_service_client::PolicyServiceClient;
use crate::service::convert;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

/// What to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// grpc.health.v1 Check: the transport's ceiling.
    Health,
    /// Decide of distinct jobs the policy allows.
    DecideAllow,
    /// Decide of distinct jobs that need approval.
    DecideApproval,
    /// Decide, then approvals from enough distinct approvers, then Bind.
    Cycle,
    /// Many binds of the same approved jobs: exactly one may succeed per job.
    BindRace,
    /// decide-allow while a large policy is reloaded every second.
    Reload,
}

/// Tokens by role, from a `dev-identities.json`-shaped file.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    pub agent: Option<String>,
    pub executor: Option<String>,
    pub operator: Option<String>,
    /// Approvers, in file order: (name, token, roles).
    pub approvers: Vec<(String, String, Vec<String>)>,
}

impl Tokens {
    /// Reads `{"identities":[{"name","token","roles"}]}`.
    pub fn from_json(v: &Value) -> Result<Tokens, String> {
        let ids = v["identities"]
            .as_array()
            .ok_or("expected {\"identities\": [{\"name\", \"token\", \"roles\"}]}")?;
        let mut t = Tokens::default();
        for i in ids {
            let name = i["name"].as_str().unwrap_or("").to_owned();
            let token = i["token"]
                .as_str()
                .ok_or("an identity without a token")?
                .to_owned();
            let roles: Vec<String> = i["roles"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter_map(|x| x.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let has = |r: &str| roles.iter().any(|x| x == r);
            if has("agent") && t.agent.is_none() {
                t.agent = Some(token.clone());
            }
            if has("executor") && t.executor.is_none() {
                t.executor = Some(token.clone());
            }
            if has("operator") && t.operator.is_none() {
                t.operator = Some(token.clone());
            }
            if roles
                .iter()
                .any(|r| !crate::policy::model::BUILTIN_ROLES.contains(&r.as_str()))
            {
                t.approvers.push((name, token, roles));
            }
        }
        Ok(t)
    }
}

/// How to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub server: String,
    /// TLS for an https:// server.
    pub tls: crate::tls::ClientFiles,
    pub scenario: Scenario,
    pub duration: Duration,
    pub warmup: Duration,
    pub connections: usize,
    pub concurrency: usize,
    /// Calls per second (open loop); `None`: closed loop.
    pub rate: Option<f64>,
    pub tokens: Tokens,
    /// For `reload`: the policies to alternate between.
    pub reload_policies: Vec<String>,
    /// For `bind-race`: approved jobs to race on.
    pub race_jobs: usize,
    /// Stop after this many operations (closed loop), e.g. to fill a database.
    pub max_operations: Option<u64>,
}

/// Latency summary in microseconds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
    pub mean: f64,
}

fn summarize(h: &Histogram<u64>) -> Latency {
    Latency {
        count: h.len(),
        p50: h.value_at_quantile(0.5),
        p90: h.value_at_quantile(0.9),
        p99: h.value_at_quantile(0.99),
        p999: h.value_at_quantile(0.999),
        max: h.max(),
        mean: h.mean(),
    }
}

/// The result of a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub scenario: Scenario,
    pub mode: &'static str,
    pub connections: usize,
    pub concurrency: usize,
    pub target_rate: Option<f64>,
    pub duration_secs: f64,
    /// Operations measured (after warm-up).
    pub operations: u64,
    pub ok: u64,
    pub errors: u64,
    pub throughput_per_sec: f64,
    pub latency_us: Latency,
    /// Count of every gRPC status (by code name) over measured operations.
    pub statuses: BTreeMap<String, u64>,
    /// Count of every refusal reason.
    pub reasons: BTreeMap<String, u64>,
    /// Scenario-specific figures.
    pub extra: BTreeMap<String, Value>,
}

#[derive(Clone)]
struct Bearer(MetadataValue<Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

fn bearer(token: &Option<String>, role: &str) -> Result<Bearer, String> {
    let t = token
        .as_ref()
        .ok_or_else(|| format!("no {role} token in the identities file"))?;
    format!("Bearer {t}")
        .parse()
        .map(Bearer)
        .map_err(|_| format!("the {role} token is not header-safe"))
}

/// The outcome of one operation.
type Outcome = Result<(), tonic::Status>;

/// Shared counters.
struct Tally {
    measure_from: Instant,
    measure_until: Instant,
    hist: Mutex<Histogram<u64>>,
    /// Latencies of calls started while a reload was in flight.
    hist_reload: Mutex<Histogram<u64>>,
    statuses: Mutex<BTreeMap<String, u64>>,
    reasons: Mutex<BTreeMap<String, u64>>,
    reloading: AtomicBool,
}

impl Tally {
    fn record(&self, scheduled: Instant, outcome: &Outcome, during_reload: bool) {
        if scheduled < self.measure_from || scheduled >= self.measure_until {
            return;
        }
        let us = scheduled.elapsed().as_micros().min(u128::from(u64::MAX)) as u64;
        let target = if during_reload {
            &self.hist_reload
        } else {
            &self.hist
        };
        if let Ok(mut h) = target.lock() {
            let _ = h.record(us.max(1));
        }
        let code = match outcome {
            Ok(()) => "OK".to_owned(),
            Err(s) => format!("{:?}", s.code()),
        };
        if let Ok(mut m) = self.statuses.lock() {
            *m.entry(code).or_default() += 1;
        }
        if let Err(s) = outcome {
            let reason = convert::error_detail(s)
                .and_then(|d| crate::service::status::reason_from_proto(d.reason))
                .map_or("NONE".to_owned(), |r| r.as_str().to_owned());
            if let Ok(mut m) = self.reasons.lock() {
                *m.entry(reason).or_default() += 1;
            }
        }
    }
}

async fn connect(
    server: &str,
    tls: &crate::tls::ClientFiles,
    n: usize,
) -> Result<Vec<Channel>, String> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        let ch = crate::tls::endpoint(server, tls)?
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| format!("cannot reach {server}: {e}"))?;
        out.push(ch);
    }
    Ok(out)
}

static JOB_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A prefix for this run's job ids: 48 random bits. (The first 12 hex
/// digits of a UUIDv7 are its millisecond timestamp, so two loads started
/// in the same millisecond, one per replica, used to decide, approve and
/// bind each other's jobs; the last 12 are random.)
fn run_id() -> String {
    let id = uuid::Uuid::now_v7().simple().to_string();
    id[id.len() - 12..].to_owned()
}

/// An allowed job under the shipped policy (a read).
fn allow_job(id: String) -> pb::Job {
    pb::Job {
        job_id: id,
        topic: "job.repo.read".into(),
        action: "read".into(),
        target: "src/main.rs".into(),
        ..Default::default()
    }
}

/// A job that needs approval by two finance approvers under the shipped
/// policy (a payment).
fn approval_job(id: String) -> pb::Job {
    let mut params = prost_types::Struct::default();
    params.fields.insert(
        "amount".into(),
        prost_types::Value {
            kind: Some(prost_types::value::Kind::NumberValue(125.0)),
        },
    );
    pb::Job {
        job_id: id,
        topic: "job.billing.pay".into(),
        action: "pay".into(),
        target: "vendor-42".into(),
        risk_tags: vec!["payment".into()],
        params: Some(params),
        ..Default::default()
    }
}

type Decision =
    DecisionServiceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;
type Approvals =
    ApprovalServiceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

/// Clients for one worker.
struct Worker {
    health: tonic_health::pb::health_client::HealthClient<Channel>,
    agent: Option<Decision>,
    executor: Option<Decision>,
    approvers: Vec<Approvals>,
}

/// Decides a job and, for cycle and bind-race, walks it to approval.
async fn decide_and_approve(
    w: &mut Worker,
    job: pb::Job,
) -> Result<pb::DecideResponse, tonic::Status> {
    let agent = w
        .agent
        .as_mut()
        .ok_or_else(|| tonic::Status::internal("no agent"))?;
    let id = job.job_id.clone();
    let d = agent
        .decide(pb::DecideRequest { job: Some(job) })
        .await?
        .into_inner();
    if d.approval_required {
        let needed: u32 = d.gates.iter().map(|g| g.approvers).sum();
        for a in w.approvers.iter_mut().take(needed as usize) {
            a.approve(pb::ApproveRequest {
                job_id: id.clone(),
                reason: "bench".into(),
                ..Default::default()
            })
            .await?;
        }
    }
    Ok(d)
}

async fn bind(w: &mut Worker, d: &pb::DecideResponse) -> Outcome {
    let exec = w
        .executor
        .as_mut()
        .ok_or_else(|| tonic::Status::internal("no executor"))?;
    exec.bind(pb::BindRequest {
        job_id: d.job_id.clone(),
        content: Some(pb::bind_request::Content::JobHash(d.job_hash.clone())),
        policy_snapshot: d.policy_snapshot.clone(),
    })
    .await
    .map(|_| ())
}

/// Runs a plan and reports.
pub async fn run(plan: Plan) -> Result<Report, String> {
    let channels = connect(&plan.server, &plan.tls, plan.connections).await?;
    let run = run_id();
    let needs_approvers = matches!(plan.scenario, Scenario::Cycle | Scenario::BindRace);
    if needs_approvers && plan.tokens.approvers.len() < 2 {
        return Err("cycle and bind-race need at least two approver identities".into());
    }
    let agent = bearer(&plan.tokens.agent, "agent");
    let executor = bearer(&plan.tokens.executor, "executor");
    let approver_bearers: Vec<Bearer> = plan
        .tokens
        .approvers
        .iter()
        .filter_map(|(_, t, _)| format!("Bearer {t}").parse().ok().map(Bearer))
        .collect();
    let make_worker = |ch: &Channel| -> Result<Worker, String> {
        let needs_agent = !matches!(plan.scenario, Scenario::Health | Scenario::BindRace);
        Ok(Worker {
            health: tonic_health::pb::health_client::HealthClient::new(ch.clone()),
            agent: if needs_agent || plan.scenario == Scenario::BindRace {
                Some(DecisionServiceClient::with_interceptor(
                    ch.clone(),
                    agent.clone()?,
                ))
            } else {
                None
            },
            executor: if matches!(plan.scenario, Scenario::Cycle | Scenario::BindRace) {
                Some(DecisionServiceClient::with_interceptor(
                    ch.clone(),
                    executor.clone()?,
                ))
            } else {
                None
            },
            approvers: approver_bearers
                .iter()
                .map(|b| ApprovalServiceClient::with_interceptor(ch.clone(), b.clone()))
                .collect(),
        })
    };

    // bind-race: approved jobs to race on, prepared before the clock starts.
    let mut race: Vec<pb::DecideResponse> = Vec::new();
    if plan.scenario == Scenario::BindRace {
        let mut w = make_worker(&channels[0])?;
        for i in 0..plan.race_jobs.max(1) {
            let d = decide_and_approve(&mut w, approval_job(format!("bench-{run}-race-{i}")))
                .await
                .map_err(|s| format!("preparing bind-race jobs: {}", s.message()))?;
            race.push(d);
        }
    }
    let race = Arc::new(race);
    let race_wins: Arc<Mutex<HashMap<String, u64>>> = Arc::new(Mutex::new(HashMap::new()));

    let now = Instant::now();
    let tally = Arc::new(Tally {
        measure_from: now + plan.warmup,
        measure_until: now + plan.warmup + plan.duration,
        hist: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?),
        hist_reload: Mutex::new(
            Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| e.to_string())?,
        ),
        statuses: Mutex::new(BTreeMap::new()),
        reasons: Mutex::new(BTreeMap::new()),
        reloading: AtomicBool::new(false),
    });
    let end = tally.measure_until;

    // The reloader for the reload scenario.
    let reloads = Arc::new(AtomicU64::new(0));
    let reload_failures = Arc::new(AtomicU64::new(0));
    let reloader = if plan.scenario == Scenario::Reload {
        if plan.reload_policies.len() < 2 {
            return Err("reload needs two policies to alternate between".into());
        }
        let op = bearer(&plan.tokens.operator, "operator")?;
        let mut client = PolicyServiceClient::with_interceptor(channels[0].clone(), op)
            .max_encoding_message_size(64 * 1024 * 1024)
            .max_decoding_message_size(64 * 1024 * 1024);
        let (policies, tally, reloads, failures) = (
            plan.reload_policies.clone(),
            tally.clone(),
            reloads.clone(),
            reload_failures.clone(),
        );
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut i = 0usize;
            while Instant::now() < end {
                tick.tick().await;
                tally.reloading.store(true, Ordering::SeqCst);
                let r = client
                    .reload_policy(pb::ReloadPolicyRequest {
                        source: policies[i % policies.len()].clone(),
                        filename: format!("bench-{i}.yaml"),
                        dry_run: false,
                        tenant: String::new(),
                    })
                    .await;
                tally.reloading.store(false, Ordering::SeqCst);
                match r {
                    Ok(_) => reloads.fetch_add(1, Ordering::SeqCst),
                    Err(_) => failures.fetch_add(1, Ordering::SeqCst),
                };
                i += 1;
            }
        }))
    } else {
        None
    };

    let semaphore = Arc::new(tokio::sync::Semaphore::new(plan.concurrency.max(1)));
    let op = {
        let (scenario, run, race, race_wins) =
            (plan.scenario, run.clone(), race.clone(), race_wins.clone());
        move |mut w: Worker| {
            let (run, race, race_wins) = (run.clone(), race.clone(), race_wins.clone());
            async move {
                let n = JOB_COUNTER.fetch_add(1, Ordering::Relaxed);
                let outcome: Outcome = match scenario {
                    Scenario::Health => w
                        .health
                        .check(tonic_health::pb::HealthCheckRequest {
                            service: String::new(),
                        })
                        .await
                        .map(|_| ()),
                    Scenario::DecideAllow | Scenario::Reload => match w.agent.as_mut() {
                        Some(a) => a
                            .decide(pb::DecideRequest {
                                job: Some(allow_job(format!("bench-{run}-{n}"))),
                            })
                            .await
                            .map(|_| ()),
                        None => Err(tonic::Status::internal("no agent")),
                    },
                    Scenario::DecideApproval => match w.agent.as_mut() {
                        Some(a) => a
                            .decide(pb::DecideRequest {
                                job: Some(approval_job(format!("bench-{run}-{n}"))),
                            })
                            .await
                            .map(|_| ()),
                        None => Err(tonic::Status::internal("no agent")),
                    },
                    Scenario::Cycle => {
                        match decide_and_approve(&mut w, approval_job(format!("bench-{run}-{n}")))
                            .await
                        {
                            Ok(d) => bind(&mut w, &d).await,
                            Err(e) => Err(e),
                        }
                    }
                    Scenario::BindRace => {
                        let d = &race[(n as usize) % race.len()];
                        let r = bind(&mut w, d).await;
                        if r.is_ok()
                            && let Ok(mut m) = race_wins.lock()
                        {
                            *m.entry(d.job_id.clone()).or_default() += 1;
                        }
                        r
                    }
                };
                (w, outcome)
            }
        }
    };

    let mut handles = Vec::new();
    match plan.rate {
        None => {
            let issued = Arc::new(AtomicU64::new(0));
            let max_ops = plan.max_operations.unwrap_or(u64::MAX);
            for i in 0..plan.concurrency.max(1) {
                let mut w = make_worker(&channels[i % channels.len()])?;
                let (tally, op, issued) = (tally.clone(), op.clone(), issued.clone());
                handles.push(tokio::spawn(async move {
                    while Instant::now() < end && issued.fetch_add(1, Ordering::Relaxed) < max_ops {
                        let start = Instant::now();
                        let during = tally.reloading.load(Ordering::Relaxed);
                        let (back, outcome) = op(w).await;
                        w = back;
                        tally.record(start, &outcome, during);
                    }
                }));
            }
        }
        Some(rate) => {
            let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
            let workers: Vec<Worker> = (0..plan.concurrency.max(1))
                .map(|i| make_worker(&channels[i % channels.len()]))
                .collect::<Result<_, _>>()?;
            let pool = Arc::new(Mutex::new(workers));
            let mut next = Instant::now();
            while next < end {
                tokio::time::sleep_until(next.into()).await;
                let scheduled = next;
                next += interval;
                let permit = semaphore
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|e| e.to_string())?;
                let (tally, op, pool) = (tally.clone(), op.clone(), pool.clone());
                handles.push(tokio::spawn(async move {
                    let w = pool.lock().ok().and_then(|mut p| p.pop());
                    let Some(w) = w else { return };
                    let during = tally.reloading.load(Ordering::Relaxed);
                    let (w, outcome) = op(w).await;
                    // Latency counts from the scheduled start.
                    tally.record(scheduled, &outcome, during);
                    if let Ok(mut p) = pool.lock() {
                        p.push(w);
                    }
                    drop(permit);
                }));
            }
        }
    }
    for h in handles {
        let _ = h.await;
    }
    if let Some(r) = reloader {
        let _ = r.await;
    }

    let hist = tally.hist.lock().map_err(|_| "poisoned")?.clone();
    let hist_reload = tally.hist_reload.lock().map_err(|_| "poisoned")?.clone();
    let mut all = hist.clone();
    all.add(&hist_reload).map_err(|e| e.to_string())?;
    let statuses = tally.statuses.lock().map_err(|_| "poisoned")?.clone();
    let reasons = tally.reasons.lock().map_err(|_| "poisoned")?.clone();
    let ok = statuses.get("OK").copied().unwrap_or(0);
    let operations = all.len();
    let secs = plan.duration.as_secs_f64();
    let mut extra = BTreeMap::new();
    if plan.scenario == Scenario::Reload {
        extra.insert("reloads".into(), json!(reloads.load(Ordering::SeqCst)));
        extra.insert(
            "reload_failures".into(),
            json!(reload_failures.load(Ordering::SeqCst)),
        );
        extra.insert(
            "latency_during_reloads_us".into(),
            json!(summarize(&hist_reload)),
        );
        extra.insert("latency_outside_reloads_us".into(), json!(summarize(&hist)));
    }
    if plan.scenario == Scenario::BindRace {
        let wins = race_wins.lock().map_err(|_| "poisoned")?.clone();
        let double: Vec<&String> = wins
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, _)| k)
            .collect();
        extra.insert("race_jobs".into(), json!(race.len()));
        extra.insert("jobs_bound".into(), json!(wins.len()));
        extra.insert("jobs_bound_twice".into(), json!(double.len()));
    }
    if plan.scenario == Scenario::Cycle {
        extra.insert("jobs_per_sec".into(), json!(ok as f64 / secs));
    }
    Ok(Report {
        scenario: plan.scenario,
        mode: if plan.rate.is_some() {
            "open-loop"
        } else {
            "closed-loop"
        },
        connections: plan.connections,
        concurrency: plan.concurrency,
        target_rate: plan.rate,
        duration_secs: secs,
        operations,
        ok,
        errors: operations - ok.min(operations),
        throughput_per_sec: operations as f64 / secs,
        latency_us: summarize(&all),
        statuses,
        reasons,
        extra,
    })
}

/// A report for people.
pub fn render(r: &Report) -> String {
    let mut s = format!(
        "{:?} ({}, {} connections, {} in flight{})\n",
        r.scenario,
        r.mode,
        r.connections,
        r.concurrency,
        r.target_rate
            .map_or(String::new(), |x| format!(", {x}/s offered"))
    );
    s.push_str(&format!(
        "  {} operations in {:.1}s: {:.0}/s, {} ok, {} errors\n",
        r.operations, r.duration_secs, r.throughput_per_sec, r.ok, r.errors
    ));
    let l = &r.latency_us;
    s.push_str(&format!(
        "  latency µs: p50 {} p90 {} p99 {} p99.9 {} max {}\n",
        l.p50, l.p90, l.p99, l.p999, l.max
    ));
    s.push_str(&format!("  statuses: {:?}\n", r.statuses));
    if !r.reasons.is_empty() {
        s.push_str(&format!("  reasons: {:?}\n", r.reasons));
    }
    for (k, v) in &r.extra {
        s.push_str(&format!("  {k}: {v}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn runs_started_in_one_millisecond_get_their_own_job_ids() {
        let ids: std::collections::BTreeSet<String> = (0..64).map(|_| super::run_id()).collect();
        assert_eq!(ids.len(), 64);
        assert!(ids.iter().all(|id| id.len() == 12));
    }
}
