//! A throwaway PostgreSQL cluster for the tests: initdb and pg_ctl in a
//! temporary directory, on a free loopback port, as the `postgres` user when
//! running as root. One cluster per test binary, started on first use; each
//! test gets its own database. A small watchdog process stops the cluster
//! and removes its directory when the test binary exits.
//!
//! When no PostgreSQL can be started the PostgreSQL tests say so loudly and
//! skip, unless `GAVEL_REQUIRE_POSTGRES=1` (set by `.ci/run`), which turns
//! that into a failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

pub struct PgCluster {
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    dir: PathBuf,
    /// The server options, for a restart on the same port.
    opts: String,
    root: bool,
}

static CLUSTER: OnceLock<Result<PgCluster, String>> = OnceLock::new();
static NEXT_DB: AtomicU32 = AtomicU32::new(0);

fn bin_dir() -> Option<PathBuf> {
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
        && out.status.success()
    {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if let Ok(real) = std::fs::canonicalize(&p) {
            return real.parent().map(Path::to_path_buf);
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL program, as `postgres` when we are root.
fn pg_command(bin: &Path, program: &str, as_postgres: bool) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin.join(program));
        c
    } else {
        Command::new(bin.join(program))
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A cluster; `durable` keeps `synchronous_commit` on, so that a commit
/// survives the server being stopped at once (fsync stays off: the
/// machine does not crash, only the server).
fn start_cluster(durable: bool) -> Result<PgCluster, String> {
    let bin = bin_dir().ok_or("no initdb found on PATH or under /usr/lib/postgresql")?;
    let root = is_root();
    let dir = tempfile::Builder::new()
        .prefix("gavel-pg-")
        .tempdir()
        .map_err(|e| e.to_string())?
        .keep();
    let data = dir.join("data");
    if root {
        let ok = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status()
            .map_err(|e| format!("chown: {e}"))?;
        if !ok.success() {
            return Err("chown to the postgres user failed".into());
        }
    }
    let out = pg_command(&bin, "initdb", root)
        .arg("-D")
        .arg(&data)
        .args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
            "--no-instructions",
        ])
        .output()
        .map_err(|e| format!("initdb: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let port = free_port();
    let opts = format!(
        "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off -c synchronous_commit={} -c full_page_writes=off -c max_connections=400",
        dir.display(),
        if durable { "on" } else { "off" }
    );
    let cluster = PgCluster {
        port,
        bin: bin.clone(),
        data: data.clone(),
        dir: dir.clone(),
        opts,
        root,
    };
    cluster.start()?;
    // The watchdog: when this test process is gone, stop the cluster and
    // remove its directory.
    let stop = format!(
        "{} -D {} -m immediate stop",
        bin.join("pg_ctl").display(),
        data.display()
    );
    let stop = if root {
        format!("runuser -u postgres -- {stop}")
    } else {
        stop
    };
    let script = format!(
        "while kill -0 {parent} 2>/dev/null; do sleep 1; done; {stop} >/dev/null 2>&1; rm -rf {dir}",
        parent = std::process::id(),
        dir = dir.display()
    );
    Command::new("setsid")
        .args(["-f", "bash", "-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("watchdog: {e}"))?;
    Ok(cluster)
}

impl PgCluster {
    /// Starts the (stopped) server, on its port, and waits until it
    /// accepts connections.
    pub fn start(&self) -> Result<(), String> {
        let out = pg_command(&self.bin, "pg_ctl", self.root)
            .arg("-D")
            .arg(&self.data)
            .args(["-o", &self.opts, "-l"])
            .arg(self.dir.join("postgres.log"))
            .args(["-w", "-t", "60", "start"])
            .stdout(Stdio::null())
            .output()
            .map_err(|e| format!("pg_ctl: {e}"))?;
        if !out.status.success() {
            let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
            return Err(format!(
                "pg_ctl start failed: {}{log}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    }

    /// Stops the server at once (`-m immediate`: no checkpoint, every
    /// session cut, as in a crash) and waits until it is gone.
    pub fn stop(&self) {
        let out = pg_command(&self.bin, "pg_ctl", self.root)
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .output()
            .expect("pg_ctl stop");
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// A new, empty database for one test.
    pub async fn fresh_database(&self) -> String {
        use sqlx::Connection;
        let name = format!(
            "gavel_{}_{}",
            std::process::id(),
            NEXT_DB.fetch_add(1, Ordering::SeqCst)
        );
        let mut admin = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to the test cluster");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .expect("create a test database");
        self.url(&name)
    }
}

/// A cluster of the test's own, which it may stop and start; `None` as
/// for [`cluster`].
pub fn dedicated(test: &str) -> Option<PgCluster> {
    start_cluster(true)
        .map_err(|why| unavailable(test, &why))
        .ok()
}

/// Says loudly that `test` is skipped, or fails it when
/// `GAVEL_REQUIRE_POSTGRES=1`.
fn unavailable(test: &str, why: &str) {
    if std::env::var("GAVEL_REQUIRE_POSTGRES").as_deref() == Ok("1") {
        panic!("GAVEL_REQUIRE_POSTGRES=1 but PostgreSQL could not be started: {why}");
    }
    eprintln!("\n*** SKIPPED `{test}`: PostgreSQL could not be started ({why}) ***\n");
}

/// The shared cluster, or `None` (after saying so loudly) when PostgreSQL
/// cannot be started. With `GAVEL_REQUIRE_POSTGRES=1` that is a failure.
pub fn cluster(test: &str) -> Option<&'static PgCluster> {
    CLUSTER
        .get_or_init(|| start_cluster(false))
        .as_ref()
        .map_err(|why| unavailable(test, why))
        .ok()
}
