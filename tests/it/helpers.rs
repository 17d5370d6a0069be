//! `spawn_app()`: a real gavel server on 127.0.0.1:0 with a fresh SQLite
//! file, known identities and an injected clock, plus typed gRPC clients.

use crate::store::Backend;
use gavel::clock::ManualClock;
use gavel::engine::{Engine, EngineOptions, EngineSettings, InitialPolicy};
use gavel::identity::{Directory, Identity, token_hash};
use gavel::proto::v1 as pb;
use gavel::proto::v1::approval_service_client::ApprovalServiceClient;
use gavel::proto::v1::audit_service_client::AuditServiceClient;
use gavel::proto::v1::decision_service_client::DecisionServiceClient;
use gavel::proto::v1::policy_service_client::PolicyServiceClient;
use gavel::server::{ServeOptions, serve_all};
use gavel::service::http::HttpOptions;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// The policy most server tests run against.
pub const POLICY: &str = r#"
version: v1
name: test
defaults:
  decision: require_approval
  approval: { approvers: 1, roles: [reviewer], sla: 5m, timeout: 10m, bind_within: 5m }
rules:
  - id: reads
    match: { action: [read] }
    decision: allow
  - id: egress
    match: { risk_tags: [egress] }
    decision: allow_with_constraints
    constraints: { max_runtime_sec: 60 }
  - id: deploys
    match: { action: [deploy] }
    decision: require_approval
    reason: deploys need two reviewers
    approval: { approvers: 2, roles: [reviewer] }
  - id: prod
    match: { risk_tags: [prod] }
    decision: require_approval
    approval: { approvers: 1, roles: [reviewer] }
  - id: payment
    match: { risk_tags: [payment] }
    decision: require_approval
    approval: { approvers: 1, roles: [finance] }
  - id: ui-only
    match: { risk_tags: [ui-only] }
    decision: require_approval
    approval: { approvers: 1, roles: [reviewer], channels: [ui] }
  - id: freeze
    match: { action: [migrate] }
    decision: deny
    overridable: true
  - id: stop
    match: { target: ["production_*"] }
    decision: deny
"#;

/// (name, roles, acts_for)
pub const PEOPLE: &[(&str, &[&str], &[&str])] = &[
    ("agent-1", &["agent"], &[]),
    ("agent-2", &["agent"], &[]),
    ("executor", &["executor"], &[]),
    ("alice", &["reviewer", "finance"], &[]),
    ("bob", &["reviewer"], &[]),
    ("carol", &["reviewer"], &[]),
    ("dave", &["finance"], &[]),
    ("owner-1", &["reviewer"], &["agent-1"]),
    ("operator", &["operator"], &[]),
    ("auditor", &["auditor"], &[]),
    ("eve", &["breakglass"], &[]),
    ("frank", &["breakglass", "reviewer"], &[]),
    ("hybrid", &["agent", "reviewer"], &[]),
    ("nobody", &[], &[]),
];

/// The test token of a person.
pub fn token(name: &str) -> String {
    format!("test-token-{name}")
}

pub fn directory() -> Directory {
    Directory::new(
        PEOPLE
            .iter()
            .map(|(name, roles, acts_for)| {
                (
                    Identity {
                        name: (*name).into(),
                        roles: roles.iter().map(|r| r.to_string()).collect::<BTreeSet<_>>(),
                        acts_for: acts_for.iter().map(|r| r.to_string()).collect(),
                        tenants: Default::default(),
                    },
                    vec![token_hash(&token(name))],
                )
            })
            .collect(),
    )
    .unwrap()
    .with_slack_users(vec![
        ("alice".into(), vec!["UALICE".into()]),
        ("bob".into(), vec!["UBOB".into()]),
    ])
    .unwrap()
    .with_cert_subjects(vec![
        ("alice".into(), vec!["CN=alice,O=gavel tests".into()]),
        ("bob".into(), vec!["dns:bob.clients.test".into()]),
        (
            "executor".into(),
            vec!["uri:spiffe://gavel.test/executor".into()],
        ),
    ])
    .unwrap()
    .with_jwt_subjects(vec![
        ("alice".into(), vec!["idp|alice".into()]),
        ("bob".into(), vec!["idp|bob".into()]),
    ])
    .unwrap()
}

/// A running server and what a test needs to talk to it.
pub struct TestApp {
    pub addr: SocketAddr,
    /// The HTTP API and the approver page.
    pub http_addr: SocketAddr,
    pub clock: ManualClock,
    pub engine: Arc<Engine>,
    pub backend: Backend,
    pub db_url: String,
    /// Keeps a SQLite file alive.
    dir: Option<tempfile::TempDir>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

/// What a stopped server leaves for a restart.
pub struct Restart {
    pub db_url: String,
    dir: Option<tempfile::TempDir>,
}

impl Restart {
    /// A database the test made itself (a dedicated cluster, a file on a
    /// small file system).
    pub fn at(db_url: String) -> Restart {
        Restart { db_url, dir: None }
    }
}

/// Options for [`spawn_with`].
pub struct Spawn {
    pub backend: Backend,
    pub policy: String,
    pub options: EngineOptions,
    /// Reuse this database (restart tests).
    pub restart: Option<Restart>,
    pub clock_ms: i64,
    /// The audit chain this engine appends to.
    pub replica: &'static str,
    pub http: HttpOptions,
    /// TLS on both listeners.
    pub tls: Option<Arc<gavel::tls::Tls>>,
    /// JWTs of this issuer accepted as bearer tokens.
    pub oidc: Option<Arc<gavel::oidc::Verifier>>,
    /// The people, when not [`PEOPLE`].
    pub directory: Option<Directory>,
    /// The HTTP listener, when the test must know its port first.
    pub http_listener: Option<std::net::TcpListener>,
    /// OTLP export of request spans.
    pub tracing: Option<gavel::service::observe::TracingOptions>,
    /// Signed checkpoints of the chain, appended to a file.
    pub checkpoints: Option<gavel::server::CheckpointOptions>,
}

impl Spawn {
    pub fn on(backend: Backend) -> Spawn {
        Spawn {
            backend,
            policy: POLICY.to_owned(),
            options: EngineOptions::default(),
            restart: None,
            clock_ms: 1_800_000_000_000,
            replica: "main",
            http: HttpOptions::default(),
            tls: None,
            oidc: None,
            directory: None,
            http_listener: None,
            tracing: None,
            checkpoints: None,
        }
    }
}

/// A server on the backend, or `None` when PostgreSQL is unavailable.
pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_with(Spawn::on(backend)).await
}

/// A server on a fresh SQLite database with `policy`.
pub async fn sqlite_with(policy: &str) -> TestApp {
    spawn_with(Spawn {
        policy: policy.into(),
        ..Spawn::on(Backend::Sqlite)
    })
    .await
    .expect("sqlite server")
}

pub async fn spawn_with(opts: Spawn) -> Option<TestApp> {
    let (db_url, dir) = match opts.restart {
        Some(r) => (r.db_url, r.dir),
        None => crate::store::fresh_url(opts.backend, "server").await?,
    };
    let store = gavel::store::open_with(
        &db_url,
        opts.replica,
        opts.options.resources.store_options(),
    )
    .await
    .unwrap();
    let clock = ManualClock::new(opts.clock_ms);
    let engine = Engine::start(EngineSettings {
        store: store.clone(),
        clock: Arc::new(clock.clone()),
        directory: {
            let d = opts.directory.unwrap_or_else(directory);
            match opts.oidc {
                Some(v) => d.with_oidc(v),
                None => d,
            }
        },
        signer: gavel::receipt::ReceiptSigner::from_seed([42; 32]),
        // An empty policy starts the engine with none (readiness tests).
        policy: (!opts.policy.is_empty()).then(|| InitialPolicy {
            source: opts.policy,
            file: "test.yaml".into(),
            force: false,
        }),
        options: opts.options,
    })
    .await
    .unwrap_or_else(|e| panic!("engine: {e}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let http_listener = match opts.http_listener {
        Some(l) => {
            l.set_nonblocking(true).unwrap();
            tokio::net::TcpListener::from_std(l).unwrap()
        }
        None => tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let http_addr = http_listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let options = ServeOptions {
        // The sweeper is driven by tests through `engine.sweep()`.
        sweep_interval: Duration::from_secs(3600),
        tls: opts.tls,
        tracing: opts.tracing,
        checkpoints: opts.checkpoints,
        ..ServeOptions::default()
    };
    let e = engine.clone();
    let handle = tokio::spawn(async move {
        serve_all(
            e,
            listener,
            Some((http_listener, opts.http)),
            None,
            options,
            async {
                let _ = rx.await;
            },
        )
        .await
        .unwrap();
    });
    Some(TestApp {
        addr,
        http_addr,
        clock,
        engine,
        backend: opts.backend,
        db_url,
        dir,
        shutdown: Some(tx),
        handle: Some(handle),
    })
}

/// SQL straight to the test database, under the store (for tampering).
pub async fn raw_sql(db_url: &str, sql: &str) -> Result<u64, String> {
    use sqlx::Connection;
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    if db_url.starts_with("postgres") {
        let mut c = sqlx::PgConnection::connect(db_url)
            .await
            .map_err(|e| e.to_string())?;
        sqlx::query(sql)
            .execute(&mut c)
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| e.to_string())
    } else {
        let mut c = sqlx::SqliteConnection::connect(db_url)
            .await
            .map_err(|e| e.to_string())?;
        sqlx::query(sql)
            .execute(&mut c)
            .await
            .map(|r| r.rows_affected())
            .map_err(|e| e.to_string())
    }
}

#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(v) = &self.0 {
            req.metadata_mut().insert("authorization", v.clone());
        }
        Ok(req)
    }
}

type C<T> = T;
pub type Decision = C<DecisionServiceClient<InterceptedService<Channel, Bearer>>>;
pub type Approval = C<ApprovalServiceClient<InterceptedService<Channel, Bearer>>>;
pub type Policy = C<PolicyServiceClient<InterceptedService<Channel, Bearer>>>;
pub type Audit = C<AuditServiceClient<InterceptedService<Channel, Bearer>>>;

/// Clients of every service, calling as one identity.
pub struct Clients {
    pub decision: Decision,
    pub approval: Approval,
    pub policy: Policy,
    pub audit: Audit,
}

impl TestApp {
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    /// Clients calling as `who` (`None`: no token at all).
    pub async fn as_raw(&self, token: Option<String>) -> Clients {
        clients(self.channel().await, token)
    }

    /// The database, for a second engine on it (replica tests).
    pub fn share(&self) -> Restart {
        Restart {
            db_url: self.db_url.clone(),
            dir: None,
        }
    }

    pub async fn as_(&self, who: &str) -> Clients {
        self.as_raw(Some(token(who))).await
    }

    /// Stops the server and waits for it; the database is kept for a restart.
    pub async fn stop(mut self) -> Restart {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap();
        }
        Restart {
            db_url: self.db_url.clone(),
            dir: self.dir.take(),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Clients on a channel, calling with a token (`None`: no token at all).
pub fn clients(ch: Channel, token: Option<String>) -> Clients {
    let b = Bearer(token.map(|t| format!("Bearer {t}").parse().unwrap()));
    Clients {
        decision: DecisionServiceClient::with_interceptor(ch.clone(), b.clone()),
        approval: ApprovalServiceClient::with_interceptor(ch.clone(), b.clone()),
        policy: PolicyServiceClient::with_interceptor(ch.clone(), b.clone()),
        audit: AuditServiceClient::with_interceptor(ch, b),
    }
}

/// A wire job.
pub fn job(id: &str, action: &str, tags: &[&str]) -> pb::Job {
    pb::Job {
        job_id: id.into(),
        topic: format!("job.test.{action}"),
        action: action.into(),
        target: "svc-a".into(),
        risk_tags: tags.iter().map(|t| t.to_string()).collect(),
        params: Some(prost_types::Struct {
            fields: [(
                "n".to_string(),
                prost_types::Value {
                    kind: Some(prost_types::value::Kind::NumberValue(1.0)),
                },
            )]
            .into(),
        }),
        ..Default::default()
    }
}

/// The machine-readable reason of a refused call.
pub fn reason(s: &tonic::Status) -> String {
    gavel::service::convert::error_detail(s)
        .and_then(|d| gavel::service::status::reason_from_proto(d.reason))
        .map(|r| r.as_str().to_owned())
        .unwrap_or_else(|| format!("<no detail: {:?} {}>", s.code(), s.message()))
}

pub async fn decide(c: &mut Clients, j: pb::Job) -> Result<pb::DecideResponse, tonic::Status> {
    c.decision
        .decide(pb::DecideRequest { job: Some(j) })
        .await
        .map(|r| r.into_inner())
}

pub async fn approve(
    c: &mut Clients,
    id: &str,
    reason: &str,
) -> Result<pb::JobRecord, tonic::Status> {
    c.approval
        .approve(pb::ApproveRequest {
            job_id: id.into(),
            reason: reason.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner().job.unwrap())
}

pub async fn bind_hash(
    c: &mut Clients,
    id: &str,
    hash: &str,
    snapshot: &str,
) -> Result<pb::BindResponse, tonic::Status> {
    c.decision
        .bind(pb::BindRequest {
            job_id: id.into(),
            content: Some(pb::bind_request::Content::JobHash(hash.into())),
            policy_snapshot: snapshot.into(),
        })
        .await
        .map(|r| r.into_inner())
}

/// A job as `c` may see it (the call must succeed).
pub async fn job_of(c: &mut Clients, id: &str) -> pb::JobRecord {
    c.decision
        .get_job(pb::GetJobRequest { job_id: id.into() })
        .await
        .unwrap_or_else(|e| panic!("get {id}: {e:?}"))
        .into_inner()
        .job
        .unwrap()
}

/// The kinds of a job's audit entries in order, as an auditor reads them.
pub async fn story(auditor: &mut Clients, id: &str) -> Vec<String> {
    auditor
        .audit
        .get_job_history(pb::GetJobHistoryRequest {
            tenant: Default::default(),
            job_id: id.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("history of {id}: {e:?}"))
        .into_inner()
        .entries
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

pub fn state(r: &pb::JobRecord) -> pb::JobState {
    pb::JobState::try_from(r.state).unwrap()
}

/// The address a spawned `gavel serve` (stdout piped) announces on its
/// first line, `gavel listening on ADDR ...`.
pub fn listening_addr(server: &mut std::process::Child) -> String {
    listening_addrs(server).0
}

/// The gRPC and HTTP addresses of a `gavel serve` process, from its first line.
pub fn listening_addrs(server: &mut std::process::Child) -> (String, String) {
    use std::io::BufRead;
    let first = std::io::BufReader::new(server.stdout.take().expect("stdout is piped"))
        .lines()
        .next()
        .expect("a first line")
        .expect("readable");
    // gavel listening on A (gRPC) and B (HTTP), policy …
    let words: Vec<&str> = first
        .strip_prefix("gavel listening on ")
        .unwrap_or_else(|| panic!("the server did not start: {first}"))
        .split_whitespace()
        .collect();
    match words.as_slice() {
        [grpc, "(gRPC)", "and", http, ..] => ((*grpc).to_owned(), (*http).to_owned()),
        _ => panic!("unexpected first line: {first}"),
    }
}

/// Anything tests call gavel through as a named identity: a spawned test
/// app, or a replica process.
pub trait Caller {
    async fn as_(&self, who: &str) -> Clients;
}

impl Caller for TestApp {
    async fn as_(&self, who: &str) -> Clients {
        TestApp::as_(self, who).await
    }
}

/// `agent-1` decides `j`, then each of `approvers` approves it in turn
/// (through `at`); the decision is returned for binding.
pub async fn decide_and_approve(
    at: &impl Caller,
    j: pb::Job,
    approvers: &[&str],
) -> pb::DecideResponse {
    let id = j.job_id.clone();
    let d = decide(&mut at.as_("agent-1").await, j).await.unwrap();
    for who in approvers {
        approve(&mut at.as_(who).await, &id, &format!("approved by {who}"))
            .await
            .unwrap_or_else(|e| panic!("{who} approving {id}: {e:?}"));
    }
    d
}

/// The executor binds the decided job with the decided hash and snapshot,
/// runs it and reports `outcome`: the bind and the final record.
pub async fn bind_and_report(
    at: &impl Caller,
    d: &pb::DecideResponse,
    outcome: pb::Outcome,
    detail: &str,
) -> (pb::BindResponse, pb::JobRecord) {
    let mut exec = at.as_("executor").await;
    let bound = bind_hash(&mut exec, &d.job_id, &d.job_hash, &d.policy_snapshot)
        .await
        .unwrap();
    let done = exec
        .decision
        .report_outcome(pb::ReportOutcomeRequest {
            job_id: d.job_id.clone(),
            bind_id: bound.bind_id.clone(),
            outcome: outcome as i32,
            detail: detail.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    (bound, done)
}

/// The whole story of one job: decide, approve by each of `approvers`,
/// bind, report success.
pub async fn full_cycle(
    at: &impl Caller,
    j: pb::Job,
    approvers: &[&str],
) -> (pb::DecideResponse, pb::BindResponse, pb::JobRecord) {
    let d = decide_and_approve(at, j, approvers).await;
    let (bound, done) = bind_and_report(at, &d, pb::Outcome::Succeeded, "done").await;
    (d, bound, done)
}

/// Binds the decided job from every one of `executors` at once; asserts
/// every loser was refused ALREADY_BOUND and returns how many won.
pub async fn race_binds(executors: Vec<Clients>, d: &pb::DecideResponse) -> usize {
    let mut tasks = Vec::new();
    for mut exec in executors {
        let (id, h, s) = (
            d.job_id.clone(),
            d.job_hash.clone(),
            d.policy_snapshot.clone(),
        );
        tasks.push(tokio::spawn(async move {
            bind_hash(&mut exec, &id, &h, &s).await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => wins += 1,
            Err(e) => assert_eq!(reason(&e), "ALREADY_BOUND"),
        }
    }
    wins
}

/// Polls `check` (a call to a server, which takes its own time) until it
/// returns `Some`, failing the test after `bound` (generous: the condition
/// is expected long before). Not a timing assertion: only a guard against
/// waiting forever.
pub async fn eventually<T>(
    what: &str,
    bound: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not true after {bound:?}"
        );
        tokio::task::yield_now().await;
    }
}

/// The `gavel` binary, with none of the connection settings of the
/// environment the tests run in.
pub fn gavel_cli() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_gavel"));
    for v in [
        "GAVEL_TOKEN",
        "GAVEL_SERVER",
        "GAVEL_CA",
        "GAVEL_CERT",
        "GAVEL_KEY",
    ] {
        cmd.env_remove(v);
    }
    cmd
}

/// A small deterministic generator (xorshift64*), seeded by the test.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
}

/// One `gavel serve` process on loopback ports, stopped with SIGTERM when
/// dropped (unless it already ended).
pub struct ServeProcess {
    pub child: std::process::Child,
    pub addr: String,
}

impl ServeProcess {
    /// Starts `gavel serve --config CONFIG` with `args` on free ports and
    /// waits for its listening line.
    pub fn start(config: &std::path::Path, args: &[&str], log: &str) -> ServeProcess {
        use std::process::{Command, Stdio};
        let mut child = Command::new(env!("CARGO_BIN_EXE_gavel"))
            .args(["serve", "--config"])
            .arg(config)
            .args(args)
            .args([
                "--grpc-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
            ])
            .env("RUST_LOG", log)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start gavel serve");
        let addr = listening_addr(&mut child);
        ServeProcess { child, addr }
    }

    /// Sends `signal` (`-TERM`, `-KILL`) and reaps the process.
    pub fn signal(&mut self, signal: &str) {
        let _ = std::process::Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Caller for ServeProcess {
    async fn as_(&self, who: &str) -> Clients {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        clients(channel, Some(token(who)))
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal("-TERM");
        }
    }
}
