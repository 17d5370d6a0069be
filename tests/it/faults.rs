//! Fault injection under load, with the crash trials' workers and checks
//! (`crash::worker`, `crash::check`): the database goes away (PostgreSQL
//! stopped at once and started again), runs out of room (SQLite on a small
//! tmpfs, grown back afterwards), or one replica is cut off from
//! PostgreSQL in the middle of its transactions (a proxy between them
//! stops forwarding, like a partition, and later heals). In every case
//! calls are answered UNAVAILABLE while it lasts, the server recovers by
//! itself, nothing acknowledged is lost, nothing is half written, no job
//! is bound twice and the audit log verifies.
//!
//! The file system tests mount a tmpfs, which needs root: without it they
//! say so and skip, unless `GAVEL_REQUIRE_FAULTS=1` (set by `.ci/run`).

use super::crash::{self, Load, worker, worker_seed};
use super::helpers::{Restart, Spawn, eventually, job, reason, spawn_with};
use super::pg;
use crate::store::Backend;
use gavel::engine::EngineOptions;
use gavel::engine::resources::Resources;
use gavel::proto::v1 as pb;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::watch;

/// The longest a test waits for what it expects much sooner: a guard
/// against hanging, not a timing assertion.
const GUARD: Duration = Duration::from_secs(120);

async fn guarded<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(GUARD, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: still waiting after {GUARD:?}"))
}

/// Engine options with a short database timeout, so that calls into an
/// unreachable database are answered quickly.
fn options() -> EngineOptions {
    EngineOptions {
        resources: Resources {
            database_timeout_ms: 1_000,
            ..Resources::default()
        },
        ..EngineOptions::default()
    }
}

fn seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1
}

/// Starts `n` workers on each address, all into one load.
fn start_load(
    addrs: &[String],
    n: usize,
    seed: u64,
) -> (Arc<Load>, Vec<tokio::task::JoinHandle<()>>) {
    let load = Load::new(None);
    let mut workers = Vec::new();
    for (a, addr) in addrs.iter().enumerate() {
        for i in 0..n {
            let k = a * n + i;
            workers.push(tokio::spawn(worker(
                addr.clone(),
                worker_seed(seed, k),
                k,
                load.clone(),
            )));
        }
    }
    (load, workers)
}

/// Stops the workers and answers what they were acknowledged.
async fn stop_load(load: &Load, workers: Vec<tokio::task::JoinHandle<()>>) -> crash::Acked {
    load.stop.store(true, Ordering::SeqCst);
    for w in workers {
        guarded("a worker to stop", w).await.unwrap();
    }
    std::mem::take(&mut *load.acked.lock().unwrap())
}

async fn unavailable_past(load: &Load, n: usize) {
    let _ = load.unavailable.subscribe().wait_for(|u| *u >= n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_and_restarted_under_load() {
    let Some(cluster) = pg::dedicated("postgres_stopped_and_restarted_under_load") else {
        return;
    };
    let url = cluster.fresh_database().await;
    let app = spawn_with(Spawn {
        policy: crash::POLICY.into(),
        options: options(),
        restart: Some(Restart::at(url.clone())),
        ..Spawn::on(Backend::Postgres)
    })
    .await
    .unwrap();
    let seed = seed();
    let (load, workers) = start_load(&[app.addr.to_string()], 3, seed);
    guarded("acknowledgements", load.acks_past(0, 40)).await;

    // Stopped at once: sessions cut, transactions in flight lost.
    let cluster = Arc::new(cluster);
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.stop()).await.unwrap();
    // Every call is now answered UNAVAILABLE (the workers assert the
    // reason of each), and the server stays up.
    guarded("UNAVAILABLE answers", unavailable_past(&load, 9)).await;

    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.start())
        .await
        .unwrap()
        .unwrap();
    // It resumes by itself: no restart, no operator.
    let resumed = *load.acks.borrow();
    guarded("service to resume", load.acks_past(resumed, 40)).await;
    let acked = stop_load(&load, workers).await;
    drop(app);
    crash::check(&url, &acked, &format!("postgres restart, seed {seed}")).await;
}

/// A tmpfs of `mib` MiB mounted on a new directory, unmounted when
/// dropped; `None` (after saying so) when this process may not mount.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(test: &str, kib: u64) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(SmallDisk { dir }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
                    Err(e) => e.to_string(),
                };
                if std::env::var("GAVEL_REQUIRE_FAULTS").as_deref() == Ok("1") {
                    panic!("GAVEL_REQUIRE_FAULTS=1 but a tmpfs cannot be mounted: {why}");
                }
                eprintln!("\n*** SKIPPED `{test}`: a tmpfs cannot be mounted here ({why}) ***\n");
                None
            }
        }
    }

    fn resize(&self, kib: u64) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={kib}k")])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(ok.success(), "remount");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: files the server kept open go with it.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A decision of `id` carrying `bytes` bytes of parameters.
fn big_job(id: &str, bytes: usize) -> pb::Job {
    let mut j = job(id, "read", &[]);
    let blob = prost_types::Value {
        kind: Some(prost_types::value::Kind::StringValue("x".repeat(bytes))),
    };
    j.params = Some(prost_types::Struct {
        fields: [("blob".to_owned(), blob)].into(),
    });
    j
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_disk_full_refuses_and_recovers() {
    let Some(disk) = SmallDisk::mount("sqlite_disk_full_refuses_and_recovers", 4096) else {
        return;
    };
    let url = format!("sqlite://{}", disk.dir.path().join("gavel.db").display());
    let app = spawn_with(Spawn {
        policy: crash::POLICY.into(),
        options: options(),
        restart: Some(Restart::at(url.clone())),
        ..Spawn::on(Backend::Sqlite)
    })
    .await
    .unwrap();
    let seed = seed();
    // The ordinary load, while the disk fills with large decisions.
    let (load, workers) = start_load(&[app.addr.to_string()], 2, seed);
    guarded("acknowledgements", load.acks_past(0, 20)).await;
    let mut agent = app.as_("agent-1").await;
    let mut filled = Vec::new();
    let refusal = guarded("the disk to fill", async {
        for i in 0.. {
            let id = format!("filler-{i}");
            match agent
                .decision
                .decide(pb::DecideRequest {
                    job: Some(big_job(&id, 60_000)),
                })
                .await
            {
                Ok(_) => filled.push(id),
                Err(s) => return s,
            }
        }
        unreachable!()
    })
    .await;
    assert_eq!(reason(&refusal), "UNAVAILABLE", "{refusal:?}");
    assert!(
        refusal.message().contains("full"),
        "the refusal says why: {refusal:?}"
    );
    assert!(
        filled.len() > 3,
        "the disk held a few large jobs first ({} did: {refusal:?})",
        filled.len()
    );
    // Reads still work, and what was acknowledged is still there.
    let first = agent
        .decision
        .get_job(pb::GetJobRequest {
            job_id: filled[0].clone(),
        })
        .await;
    assert!(first.is_ok(), "{first:?}");

    // The ordinary load's small writes may still fit for a moment after
    // a large one did not: wait until they meet the full disk too.
    guarded(
        "the ordinary load to meet the full disk",
        unavailable_past(&load, 1),
    )
    .await;
    // Room again: the server recovers by itself.
    disk.resize(64 * 1024);
    let resumed = *load.acks.borrow();
    guarded("service to resume", load.acks_past(resumed, 20)).await;
    eventually("a large decision after the disk grew", GUARD, async || {
        agent
            .decision
            .decide(pb::DecideRequest {
                job: Some(big_job("after-full", 60_000)),
            })
            .await
            .ok()
    })
    .await;
    let acked = stop_load(&load, workers).await;
    assert!(
        *load.unavailable.borrow() > 0,
        "the ordinary load met the full disk too"
    );
    drop(app);
    crash::check(&url, &acked, &format!("disk full, seed {seed}")).await;
    // The filler decisions are all there too, with their audit entries
    // (check() compares every record with its story).
    let store = gavel::store::open(&url, "check").await.unwrap();
    for id in &filled {
        assert!(store.job(id).await.unwrap().is_some(), "{id}");
    }
    drop(disk);
}

/// How the proxy treats the traffic between a replica and PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Link {
    Up,
    /// Nothing crosses, in either direction, and nobody is told: the
    /// connections hang as in a network partition.
    Partitioned,
    /// Up until a replica holds the policy activation lock inside its
    /// transaction; partitioned from there on.
    PartitionInsideActivation,
}

/// The lock a policy activation takes first on PostgreSQL, as the server
/// answers it: the statement's row description names it, then come its
/// result ("SELECT 1") and "ready, inside a transaction".
const LOCK_TAKEN: [&[u8]; 3] = [b"pg_advisory_xact_lock", b"SELECT 1\0", b"Z\0\0\0\x05T"];

/// Whether `said` holds each of `parts`, in order.
fn holds_in_order(said: &[u8], parts: &[&[u8]]) -> bool {
    let mut rest = said;
    parts
        .iter()
        .all(|p| match rest.windows(p.len()).position(|w| w == *p) {
            Some(at) => {
                rest = &rest[at + p.len()..];
                true
            }
            None => false,
        })
}

/// A TCP proxy to `upstream` that can partition its connections. When the
/// link comes back, the connections that were cut are closed (by then
/// each side has given up on them) and new ones pass.
struct Proxy {
    addr: std::net::SocketAddr,
    link: watch::Sender<Link>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: std::net::SocketAddr) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (link, _) = watch::channel(Link::Up);
        let l = link.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                tokio::spawn(pipe(client, upstream, l.clone()));
            }
        });
        Proxy { addr, link, task }
    }

    fn set(&self, link: Link) {
        self.link.send_replace(link);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn until(link: &mut watch::Receiver<Link>, want: impl Fn(Link) -> bool) {
    // A closed channel (the test is over) ends the wait too.
    let _ = link.wait_for(|l| want(*l)).await.is_ok();
}

async fn pipe(
    client: tokio::net::TcpStream,
    upstream: std::net::SocketAddr,
    control: watch::Sender<Link>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut link = control.subscribe();
    // A connection opened during the partition waits for it to end.
    until(&mut link, |l| l != Link::Partitioned).await;
    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
        return;
    };
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let (mut up, mut down) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    // What the server said lately, while a cut inside a transaction is armed.
    let mut said: Vec<u8> = Vec::new();
    loop {
        tokio::select! {
            n = cr.read(&mut up) => match n {
                Ok(n) if n > 0 => if sw.write_all(&up[..n]).await.is_err() { return },
                _ => return,
            },
            n = sr.read(&mut down) => match n {
                Ok(n) if n > 0 => {
                    if cw.write_all(&down[..n]).await.is_err() {
                        return;
                    }
                    if *link.borrow() == Link::PartitionInsideActivation {
                        said.extend_from_slice(&down[..n]);
                        if holds_in_order(&said, &LOCK_TAKEN) {
                            control.send_replace(Link::Partitioned);
                            break;
                        }
                    }
                }
                _ => return,
            },
            _ = until(&mut link, |l| l == Link::Partitioned) => break,
        }
    }
    // Hold both sockets, forward nothing, until it heals.
    until(&mut link, |l| l == Link::Up).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_partitioned_from_postgres_ends_consistently() {
    let Some(cluster) = pg::cluster("replica_partitioned_from_postgres_ends_consistently") else {
        return;
    };
    let url = cluster.fresh_database().await;
    let proxy = Proxy::start(([127, 0, 0, 1], cluster.port).into()).await;
    let via_proxy = url.replace(
        &format!("127.0.0.1:{}", cluster.port),
        &proxy.addr.to_string(),
    );
    let a = spawn_with(Spawn {
        policy: crash::POLICY.into(),
        options: options(),
        restart: Some(Restart::at(url.clone())),
        replica: "a",
        ..Spawn::on(Backend::Postgres)
    })
    .await
    .unwrap();
    let b = spawn_with(Spawn {
        policy: String::new(),
        options: options(),
        restart: Some(Restart::at(via_proxy)),
        replica: "b",
        ..Spawn::on(Backend::Postgres)
    })
    .await
    .unwrap();
    let reload = |n: usize| pb::ReloadPolicyRequest {
        // Another rule: another snapshot, which must be activated.
        source: format!(
            "{}  - id: r{n}\n    match: {{ action: [other-{n}] }}\n    decision: deny\n",
            crash::POLICY
        ),
        ..Default::default()
    };

    // Cut b off in the middle of activating a policy, holding the lock
    // every activation takes. b's operator is answered UNAVAILABLE.
    proxy.set(Link::PartitionInsideActivation);
    let refused = b
        .as_("operator")
        .await
        .policy
        .reload_policy(reload(1))
        .await
        .unwrap_err();
    assert_eq!(reason(&refused), "UNAVAILABLE", "{refused:?}");
    assert_eq!(
        *proxy.link.borrow(),
        Link::Partitioned,
        "the cut came inside the activation"
    );
    // PostgreSQL ends b's idle transaction, which gives the lock up: a
    // reload on replica a goes through (its first try may still wait past
    // its timeout while b's session is ended).
    let mut op_a = a.as_("operator").await;
    eventually("a reload on replica a", GUARD, async || {
        op_a.policy.reload_policy(reload(2)).await.ok()
    })
    .await;

    // Still partitioned, both replicas take the load (the workers of one
    // approve and bind jobs the other decided): b's callers are answered
    // UNAVAILABLE, and replica a goes on.
    let seed = seed();
    let (load, workers) = start_load(&[a.addr.to_string(), b.addr.to_string()], 2, seed);
    guarded("UNAVAILABLE answers from b", unavailable_past(&load, 4)).await;
    guarded("replica a to go on", load.acks_past(0, 60)).await;

    // Healed: b comes back by itself.
    proxy.set(Link::Up);
    let mut agent = b.as_("agent-1").await;
    eventually("replica b to decide again", GUARD, async || {
        agent
            .decision
            .decide(pb::DecideRequest {
                job: Some(job(&format!("b-back-{}", seed), "read", &[])),
            })
            .await
            .ok()
    })
    .await;
    let after = *load.acks.borrow();
    guarded("both replicas under load", load.acks_past(after, 40)).await;
    let acked = stop_load(&load, workers).await;
    drop((a, b));
    crash::check(&url, &acked, &format!("partition, seed {seed}")).await;
}
