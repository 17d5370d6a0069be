//! The Python client (`clients/python`, package gavel-client) against a
//! real `gavel serve`: its pytest suite starts the server itself from the
//! binary this build made. The interpreter is `GAVEL_PYTHON` (a venv with
//! `pip install ./clients/python[test]`); without one the test says so and
//! skips, unless `GAVEL_REQUIRE_PYTHON=1` (set by `.ci/run`).

use crate::root;

#[test]
fn the_python_client_passes_its_suite_against_a_real_server() {
    let python = std::env::var("GAVEL_PYTHON").unwrap_or_else(|_| "python3".into());
    let usable = std::process::Command::new(&python)
        .args([
            "-c",
            "import gavel_client, pytest, rfc8785, agents, langchain, langgraph, pydantic_ai",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if !usable {
        if std::env::var("GAVEL_REQUIRE_PYTHON").is_ok_and(|v| v == "1") {
            panic!(
                "GAVEL_REQUIRE_PYTHON=1 but {python} cannot import gavel_client with its test extras"
            );
        }
        eprintln!(
            "SKIPPED: Python client tests: install ./clients/python[test] and set GAVEL_PYTHON"
        );
        return;
    }
    let out = std::process::Command::new(&python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "clients/python/tests",
        ])
        .current_dir(root())
        .env("GAVEL_BIN", env!("CARGO_BIN_EXE_gavel"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" passed"), "{stdout}");
}
