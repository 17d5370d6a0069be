//! gavel's integration tests: one binary, one module per feature.

mod anchor;
mod authz;
mod bench;
mod browser;
mod cli;
mod crash;
mod deploy;
mod faults;
mod fnmatch;
mod helpers;
mod hooks;
mod http;
mod jcs;
mod logs;
mod matchers;
mod mcp;
mod metrics;
mod notify;
mod oidc;
mod openapi;
mod pg;
mod policy_load;
mod properties;
mod python;
mod replicas;
mod resources;
mod server;
mod slack;
mod stats;
mod store;
mod suites;
mod tenants;
mod tls;
mod traces;
mod transitions;

use gavel::job::{Job, Limits};
use gavel::policy::{self, Evaluation, Snapshot};
use std::path::PathBuf;

/// The repository root, for fixtures and policies.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Loads a policy from YAML text, failing the test with every finding.
pub fn load(yaml: &str) -> Snapshot {
    match policy::load(yaml, "test.yaml") {
        Ok(l) => l.snapshot,
        Err(e) => panic!("policy should load: {:#?}", e.findings),
    }
}

/// A job from JSON text.
pub fn job(json: &str) -> Job {
    Job::from_json(json.as_bytes(), &Limits::default()).expect("job should parse")
}

/// Evaluates a JSON job without a principal.
pub fn decide(snapshot: &Snapshot, json: &str) -> Evaluation {
    snapshot.policy.evaluate(&job(json), None)
}

/// An HTTP client for tests. gavel builds reqwest without a default TLS
/// provider (it installs ring's when its notifier starts), so tests
/// install it too before making clients.
pub fn http_client() -> reqwest::Client {
    static TLS: std::sync::Once = std::sync::Once::new();
    TLS.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::new()
}
