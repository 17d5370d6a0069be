"""A real `gavel serve --dev` for the tests, on free loopback ports, in a
scratch directory; stopped (by its pid) when the session ends."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    binary = os.environ.get("GAVEL_BIN") or str(ROOT / "target" / "debug" / "gavel")
    work = tmp_path_factory.mktemp("gavel")
    (work / "policies").symlink_to(ROOT / "policies")
    proc = subprocess.Popen(
        [binary, "serve", "--dev", "--data-dir", "data", "--grpc-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"],
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    first = proc.stdout.readline()
    assert first.startswith("gavel listening on "), first
    grpc_addr = first.split()[3]
    tokens = {
        i["name"]: i["token"]
        for i in json.loads((work / "data" / "dev-identities.json").read_text())["identities"]
    }
    yield {"addr": grpc_addr, "tokens": tokens, "bin": binary, "work": work}
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
