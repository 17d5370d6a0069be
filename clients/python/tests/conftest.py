"""Real `gavel serve --dev` processes for the tests, on free loopback
ports, in scratch directories; each is stopped (by its pid) at the end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@contextmanager
def gavel_server(work: Path, policy: Path | None = None, extra: list[str] | None = None, grpc: str = "127.0.0.1:0"):
    binary = os.environ.get("GAVEL_BIN") or str(ROOT / "target" / "debug" / "gavel")
    if not (work / "policies").exists():
        (work / "policies").symlink_to(ROOT / "policies")
    args = [binary, "serve", "--dev", "--data-dir", "data", "--grpc-listen", grpc, "--http-listen", "127.0.0.1:0"]
    if policy is not None:
        args += ["--policy", str(policy)]
    args += extra or []
    proc = subprocess.Popen(args, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        first = proc.stdout.readline()
        assert first.startswith("gavel listening on "), first
        tokens = {
            i["name"]: i["token"]
            for i in json.loads((work / "data" / "dev-identities.json").read_text())["identities"]
        }
        words = first.split()
        yield {"addr": words[3], "http": words[6], "tokens": tokens, "bin": binary, "work": work, "proc": proc}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    with gavel_server(tmp_path_factory.mktemp("gavel")) as s:
        yield s
