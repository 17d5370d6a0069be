//! TLS and client certificates on both doors, with certificates made at
//! test time (rcgen): who a certificate names, a certificate from another
//! CA, a certificate and a token that disagree, plaintext to a TLS port,
//! required client certificates, and reloading without dropping a
//! connection.

use crate::helpers::{Clients, Spawn, TestApp, clients, gavel_cli, job, spawn_with, token};
use crate::store::Backend;
use gavel::proto::v1 as pb;
use gavel::tls::{Tls, TlsConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::path::PathBuf;
use std::sync::Arc;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// A certificate authority that issues certificates for one test.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate and its key, as PEM.
struct Issued {
    cert: String,
    key: String,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Ca {
            issuer: Issuer::new(params, key),
            pem,
        }
    }

    fn issue(&self, cn: &str, org: Option<&str>, sans: Vec<SanType>) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        // rcgen starts with a placeholder CN first; the subject is built here
        // in the usual order, organisation before common name.
        params.distinguished_name = DistinguishedName::new();
        if let Some(o) = org {
            params.distinguished_name.push(DnType::OrganizationName, o);
        }
        params.distinguished_name.push(DnType::CommonName, cn);
        params.subject_alt_names = sans;
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    fn server(&self, cn: &str) -> Issued {
        self.issue(
            cn,
            None,
            vec![
                SanType::DnsName("localhost".try_into().unwrap()),
                SanType::IpAddress("127.0.0.1".parse().unwrap()),
            ],
        )
    }
}

/// The certificates of one test, written to a temporary directory.
struct Pki {
    dir: tempfile::TempDir,
    ca: Ca,
    other_ca: Ca,
}

impl Pki {
    fn new() -> Pki {
        let pki = Pki {
            dir: tempfile::tempdir().unwrap(),
            ca: Ca::new("gavel test CA"),
            other_ca: Ca::new("someone else's CA"),
        };
        std::fs::write(pki.path("ca.pem"), &pki.ca.pem).unwrap();
        pki.write_server(&pki.ca.server("gavel server 1"));
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write_server(&self, s: &Issued) {
        std::fs::write(self.path("server.pem"), &s.cert).unwrap();
        std::fs::write(self.path("server.key"), &s.key).unwrap();
    }

    fn config(&self, require_client_cert: bool) -> TlsConfig {
        TlsConfig {
            cert: self.path("server.pem"),
            key: self.path("server.key"),
            client_ca: Some(self.path("ca.pem")),
            require_client_cert,
        }
    }

    fn alice(&self) -> Issued {
        self.ca.issue("alice", Some("gavel tests"), vec![])
    }

    fn bob(&self) -> Issued {
        let san = SanType::DnsName("bob.clients.test".try_into().unwrap());
        self.ca.issue("bob's laptop", None, vec![san])
    }
}

async fn server(pki: &Pki, require_client_cert: bool) -> (TestApp, Arc<Tls>) {
    server_on(pki, require_client_cert, Backend::Sqlite)
        .await
        .expect("sqlite server")
}

/// A TLS server on `backend`, or `None` when PostgreSQL is unavailable.
async fn server_on(
    pki: &Pki,
    require_client_cert: bool,
    backend: Backend,
) -> Option<(TestApp, Arc<Tls>)> {
    let tls = Tls::load(pki.config(require_client_cert)).unwrap();
    let app = spawn_with(Spawn {
        tls: Some(tls.clone()),
        ..Spawn::on(backend)
    })
    .await?;
    Some((app, tls))
}

/// A gRPC channel over TLS trusting `ca`, with a client certificate or not.
async fn channel(app: &TestApp, ca: &str, cert: Option<&Issued>) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(c) = cert {
        tls = tls.identity(Identity::from_pem(&c.cert, &c.key));
    }
    Channel::from_shared(format!("https://localhost:{}", app.addr.port()))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

async fn as_cert(
    app: &TestApp,
    pki: &Pki,
    cert: Option<&Issued>,
    token: Option<String>,
) -> Clients {
    clients(channel(app, &pki.ca.pem, cert).await.unwrap(), token)
}

/// The job the first test decides, read by `c`.
async fn read_job(c: &mut Clients) -> Result<tonic::Response<pb::GetJobResponse>, tonic::Status> {
    c.decision
        .get_job(pb::GetJobRequest {
            job_id: "tls-1".into(),
        })
        .await
}

fn reason(s: &tonic::Status) -> (tonic::Code, String) {
    (s.code(), s.message().to_owned())
}

async fn client_certificates_name_people_on_both_doors(b: Backend) {
    let pki = Pki::new();
    let Some((app, _tls)) = server_on(&pki, false, b).await else {
        return;
    };

    // A token over TLS works as before; the agent has no certificate.
    let mut agent = as_cert(&app, &pki, None, Some(token("agent-1"))).await;
    let d = agent
        .decision
        .decide(pb::DecideRequest {
            job: Some(job("tls-1", "deploy", &["prod"])),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.state, pb::JobState::Pending as i32);

    // Alice's certificate alone names alice (by subject): her approval
    // counts as hers.
    let alice = pki.alice();
    let mut by_cert = as_cert(&app, &pki, Some(&alice), None).await;
    let rec = by_cert
        .approval
        .approve(pb::ApproveRequest {
            job_id: "tls-1".into(),
            reason: "checked".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .job
        .unwrap();
    assert_eq!(rec.approvals[0].approver, "alice");

    // The same person by token after by certificate is still one person.
    let mut by_token = as_cert(&app, &pki, None, Some(token("alice"))).await;
    let again = by_token
        .approval
        .approve(pb::ApproveRequest {
            job_id: "tls-1".into(),
            reason: "again".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), tonic::Code::FailedPrecondition, "{again:?}");

    // Bob by an alternative name; with alice's token on bob's certificate
    // the two credentials disagree: refused.
    let bob = pki.bob();
    let mut mixed = as_cert(&app, &pki, Some(&bob), Some(token("alice"))).await;
    let e = read_job(&mut mixed).await.unwrap_err();
    assert_eq!(
        reason(&e),
        (
            tonic::Code::Unauthenticated,
            "the client certificate and the token name different identities".into()
        )
    );
    let mut as_bob = as_cert(&app, &pki, Some(&bob), None).await;
    read_job(&mut as_bob).await.unwrap();

    // A valid certificate nobody is configured for is nobody.
    let nobody = pki.ca.issue("nobody", Some("gavel tests"), vec![]);
    let mut stranger = as_cert(&app, &pki, Some(&nobody), None).await;
    let e = read_job(&mut stranger).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");

    // Alice's name on a certificate from another CA: no handshake.
    let forged = pki.other_ca.issue("alice", Some("gavel tests"), vec![]);
    let refused = match channel(&app, &pki.ca.pem, Some(&forged)).await {
        Err(_) => true,
        Ok(ch) => clients(ch, None)
            .decision
            .get_job(pb::GetJobRequest {
                job_id: "tls-1".into(),
            })
            .await
            // Accepted, it would read the job as alice.
            .is_err(),
    };
    assert!(refused, "a certificate from another CA must not connect");

    // Plaintext to the TLS port gets nowhere.
    let plain = Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(ch) = plain {
        let e = clients(ch, Some(token("alice")))
            .decision
            .get_job(pb::GetJobRequest {
                job_id: "tls-1".into(),
            })
            .await
            .unwrap_err();
        assert_ne!(e.code(), tonic::Code::Ok);
    }

    // The HTTP door: alice's certificate names her there too.
    let http = http_client(&pki, Some(&alice));
    let r = http
        .get(format!(
            "https://localhost:{}/api/v1/jobs/tls-1",
            app.http_addr.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["approvals"][0]["approver"], "alice");
    let r = http_client(&pki, Some(&nobody))
        .get(format!(
            "https://localhost:{}/api/v1/jobs/tls-1",
            app.http_addr.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
}

fn http_client(pki: &Pki, cert: Option<&Issued>) -> reqwest::Client {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca.pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match cert {
        None => builder.with_no_client_auth(),
        Some(c) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(c.cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(c.key.as_bytes()).unwrap(),
            )
            .unwrap(),
    };
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .build()
        .unwrap()
}

/// The certificate a fresh connection to `port` is served.
async fn served_cert(pki: &Pki, port: u16) -> Vec<u8> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca.pem.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

fn der_of(pem: &str) -> Vec<u8> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_without_dropping_connections() {
    let pki = Pki::new();
    let first = std::fs::read_to_string(pki.path("server.pem")).unwrap();
    let (app, tls) = server(&pki, false).await;
    let mut open = as_cert(&app, &pki, None, Some(token("agent-1"))).await;
    assert_eq!(served_cert(&pki, app.addr.port()).await, der_of(&first));

    // Nothing changed: nothing reloaded.
    assert!(!tls.reload_if_changed().unwrap());

    // A broken key file: the reload fails, names the file, and the
    // certificates in use stay.
    std::fs::write(pki.path("server.key"), "not a key").unwrap();
    let e = tls.reload().unwrap_err();
    assert!(e.0.contains("server.key"), "{e}");
    assert_eq!(served_cert(&pki, app.addr.port()).await, der_of(&first));

    // New files: new connections get the new certificate, and the
    // connection opened before the reload still works.
    let second = pki.ca.server("gavel server 2");
    pki.write_server(&second);
    tls.reload().unwrap();
    assert_eq!(
        served_cert(&pki, app.addr.port()).await,
        der_of(&second.cert)
    );
    assert_ne!(der_of(&first), der_of(&second.cert));
    let d = open
        .decision
        .decide(pb::DecideRequest {
            job: Some(job("after-reload", "read", &[])),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.state, pb::JobState::Allowed as i32);
}

async fn a_required_client_certificate_is_required(b: Backend) {
    let pki = Pki::new();
    let Some((app, _tls)) = server_on(&pki, true, b).await else {
        return;
    };
    // Without a certificate the handshake fails (or the first call does).
    let refused = match channel(&app, &pki.ca.pem, None).await {
        Err(_) => true,
        Ok(ch) => clients(ch, Some(token("alice")))
            .decision
            .get_job(pb::GetJobRequest { job_id: "x".into() })
            .await
            .is_err_and(|e| e.code() != tonic::Code::NotFound),
    };
    assert!(refused);
    // With one, the call is answered (here: no such job).
    let alice = pki.alice();
    let e = as_cert(&app, &pki, Some(&alice), None)
        .await
        .decision
        .get_job(pb::GetJobRequest { job_id: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
}

#[test]
fn a_certificate_reads_as_its_subject_and_alternative_names() {
    let ca = Ca::new("unit CA");
    let issued = ca.issue(
        "carol",
        Some("Example"),
        vec![
            SanType::DnsName("carol.example".try_into().unwrap()),
            SanType::URI("spiffe://example/carol".try_into().unwrap()),
            SanType::Rfc822Name("carol@example.com".try_into().unwrap()),
            SanType::IpAddress("10.0.0.7".parse().unwrap()),
        ],
    );
    let c = gavel::tls::ClientCert::from_der(&der_of(&issued.cert)).unwrap();
    assert_eq!(c.subject, "CN=carol,O=Example");
    assert_eq!(
        c.names,
        [
            "dns:carol.example",
            "uri:spiffe://example/carol",
            "email:carol@example.com",
            "ip:10.0.0.7"
        ]
    );
    assert!(gavel::tls::ClientCert::from_der(b"junk").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_speaks_tls_with_a_token_or_a_client_certificate() {
    let pki = Pki::new();
    let (app, _tls) = server(&pki, false).await;
    let alice = pki.alice();
    std::fs::write(pki.path("alice.pem"), &alice.cert).unwrap();
    std::fs::write(pki.path("alice.key"), &alice.key).unwrap();
    let url = format!("https://localhost:{}", app.addr.port());
    let ca = pki.path("ca.pem").display().to_string();
    let cert = pki.path("alice.pem").display().to_string();
    let key = pki.path("alice.key").display().to_string();
    let gavel = |args: Vec<&str>| gavel_cli().args(args).output();

    // A client certificate stands in for the token.
    let out = gavel(vec![
        "list", "--server", &url, "--ca", &ca, "--cert", &cert, "--key", &key,
    ])
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A token over TLS.
    let alice_token = token("alice");
    let out = gavel(vec![
        "list",
        "--server",
        &url,
        "--ca",
        &ca,
        "--token",
        &alice_token,
    ])
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Without the CA the server's certificate is not trusted.
    let out = gavel(vec!["list", "--server", &url, "--token", &alice_token])
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // A certificate without its key, and TLS files for a plaintext URL.
    let out = gavel(vec!["list", "--server", &url, "--ca", &ca, "--cert", &cert])
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plain = format!("http://{}", app.addr);
    let out = gavel(vec![
        "list",
        "--server",
        &plain,
        "--ca",
        &ca,
        "--token",
        &alice_token,
    ])
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("use an https:// --server"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `gavel bench` over TLS: with the CA it decides, without it nothing
/// gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gavel_bench_runs_over_tls() {
    let pki = Pki::new();
    let (app, _tls) = server(&pki, false).await;
    let ids = serde_json::json!({"identities": crate::helpers::PEOPLE
        .iter()
        .map(|(name, roles, _)| serde_json::json!({"name": name, "token": token(name), "roles": roles}))
        .collect::<Vec<_>>()});
    std::fs::write(pki.path("identities.json"), ids.to_string()).unwrap();
    let url = format!("https://localhost:{}", app.addr.port());
    let ca = pki.path("ca.pem").display().to_string();
    let identities = pki.path("identities.json").display().to_string();
    let bench = |extra: Vec<&str>| {
        gavel_cli()
            .args([
                "bench",
                "run",
                "--server",
                &url,
                "--identities",
                &identities,
            ])
            .args([
                "--scenario",
                "decide-allow",
                "--duration",
                "0.5",
                "--warmup",
                "0",
            ])
            .args([
                "--connections",
                "1",
                "--concurrency",
                "2",
                "--output",
                "json",
            ])
            .args(extra)
            .output()
    };
    let out = bench(vec!["--ca", &ca]).await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["ok"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    let out = bench(vec![]).await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "an untrusted server is not benched"
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cannot reach"),
        "{r}"
    );
}

/// `gavel serve --config` with a `[tls]` table, end to end: the server says
/// TLS is on, the CLI reaches it with a client certificate, and plaintext
/// does not.
#[test]
fn gavel_serve_reads_its_tls_table() {
    let pki = Pki::new();
    let alice = pki.alice();
    std::fs::write(pki.path("alice.pem"), &alice.cert).unwrap();
    std::fs::write(pki.path("alice.key"), &alice.key).unwrap();
    let policy = pki.path("policy.yaml");
    std::fs::write(
        &policy,
        "version: v1\nname: tls\ndefaults:\n  decision: require_approval\n  approval: { approvers: 1, roles: [reviewer] }\nrules: []\n",
    )
    .unwrap();
    let config = format!(
        "grpc_listen = \"127.0.0.1:0\"\nhttp_listen = \"127.0.0.1:0\"\ndatabase_url = \"sqlite://{db}\"\npolicy = \"{policy}\"\nreceipt_key = \"{key}\"\n[tls]\ncert = \"{cert}\"\nkey = \"{skey}\"\nclient_ca = \"{ca}\"\n[[identities]]\nname = \"alice\"\nroles = [\"reviewer\"]\ncert_subjects = [\"CN=alice,O=gavel tests\"]\n",
        db = pki.path("g.db").display(),
        policy = policy.display(),
        key = pki.path("receipt.key").display(),
        cert = pki.path("server.pem").display(),
        skey = pki.path("server.key").display(),
        ca = pki.path("ca.pem").display(),
    );
    std::fs::write(pki.path("gavel.toml"), config).unwrap();
    let bin = env!("CARGO_BIN_EXE_gavel");
    let mut server = std::process::Command::new(bin)
        .args(["serve", "--config"])
        .arg(pki.path("gavel.toml"))
        .env_remove("GAVEL_GRPC_LISTEN")
        .env_remove("GAVEL_HTTP_LISTEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let mut lines = std::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .strip_prefix("gavel listening on ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("{first}"))
        .to_owned();
    let second = lines.next().unwrap().unwrap();
    assert_eq!(
        second,
        "TLS on both listeners; client certificates accepted"
    );
    let port = addr.rsplit(':').next().unwrap();
    let run = |server_url: String, extra: &[&str]| {
        std::process::Command::new(bin)
            .args(["list", "--server", &server_url])
            .args(extra)
            .env_remove("GAVEL_TOKEN")
            .env_remove("GAVEL_SERVER")
            .output()
            .unwrap()
    };
    let ca = pki.path("ca.pem").display().to_string();
    let cert = pki.path("alice.pem").display().to_string();
    let key = pki.path("alice.key").display().to_string();
    let ok = run(
        format!("https://localhost:{port}"),
        &["--ca", &ca, "--cert", &cert, "--key", &key],
    );
    let plain = run(format!("http://{addr}"), &["--token", "whatever"]);
    std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(server.wait().unwrap().success());
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(plain.status.code(), Some(1));
}

crate::on_both_backends!(
    client_certificates_name_people_on_both_doors,
    client_certificates_name_people_on_both_doors
);
crate::on_both_backends!(
    a_required_client_certificate_is_required,
    a_required_client_certificate_is_required
);
