"""guard() against a real server: the tool runs only as decided, approved
and bound, with the canonical params, and its outcome is reported."""

from __future__ import annotations

import threading
import uuid

import pytest
from conftest import gavel_server

from gavel_client import Gavel, GavelError, WaitTimeout, guard
from test_client import cli


def clients(server):
    return Gavel(server["addr"], server["tokens"]["dev-agent"]), Gavel(server["addr"], server["tokens"]["dev-executor"])


def test_an_allowed_tool_runs_with_the_bound_params_and_is_reported(server):
    agent, executor = clients(server)
    calls = []

    @guard(agent, executor, topic="job.repo.read", action="read", target="src/main.rs")
    def read(path: str) -> str:
        calls.append(path)
        return f"read {path}"

    job_id = f"g-read-{uuid.uuid4().hex[:8]}"
    assert read(path="src/main.rs", gavel_job_id=job_id) == "read src/main.rs"
    assert calls == ["src/main.rs"]
    assert agent.state(job_id) == "succeeded"
    # The same call retried (same job id) never runs twice.
    with pytest.raises(GavelError) as e:
        read(path="src/main.rs", gavel_job_id=job_id)
    assert e.value.reason == "ALREADY_BOUND"
    assert calls == ["src/main.rs"]


def test_a_tool_waits_for_approval_then_runs(server):
    agent, executor = clients(server)
    ran = []

    g = guard(agent, executor, topic="job.finance.pay", action="pay", target="vendor-acme", risk_tags=["payment"], timeout=60)

    @g
    def pay(invoice: str, amount_usd: int) -> None:
        ran.append((invoice, amount_usd))

    job_id = f"g-pay-{uuid.uuid4().hex[:8]}"
    # A framework that asked before (same job id, same arguments) resumes
    # that decision: no second request is made.
    first = agent.decide(g.job({"invoice": "INV-9", "amount_usd": 900}, job_id))
    assert first.state == "pending"

    def approve():
        cli(server, "alice", "approve", job_id, "--reason", "invoice matches")
        cli(server, "bob", "approve", job_id, "--reason", "checked")

    t = threading.Thread(target=approve)
    t.start()
    pay(invoice="INV-9", amount_usd=900, gavel_job_id=job_id)
    t.join()
    assert ran == [("INV-9", 900)]
    assert agent.state(job_id) == "succeeded"


def test_deny_and_timeout_never_run_the_tool(server):
    agent, executor = clients(server)
    ran = []

    @guard(agent, executor, topic="job.db.write", action="delete", target="production_users", risk_tags=["prod", "write", "destructive"])
    def drop() -> None:
        ran.append("drop")

    with pytest.raises(GavelError) as e:
        drop()
    assert e.value.reason == "DENIED"

    @guard(agent, executor, topic="job.finance.pay", action="pay", risk_tags=["payment"], timeout=0.3)
    def pay(amount_usd: int) -> None:
        ran.append("pay")

    with pytest.raises(WaitTimeout):
        pay(amount_usd=1)
    assert ran == []


def test_a_failing_tool_is_reported_failed_and_the_error_propagates(server):
    agent, executor = clients(server)
    g = guard(agent, executor, topic="job.repo.read", action="read", target="x")
    job_id = f"g-fail-{uuid.uuid4().hex[:8]}"
    with pytest.raises(RuntimeError):
        with g.call({"path": "x"}, job_id) as bound:
            assert bound.params == {"path": "x"}
            raise RuntimeError("disk on fire")
    assert agent.state(job_id) == "failed"


def test_max_runtime_sec_bounds_the_run(tmp_path):
    policy = tmp_path / "short.yaml"
    policy.write_text(
        "version: v1\nname: short\ndefaults:\n  decision: deny\nrules:\n"
        "  - id: quick\n    match: { action: [run] }\n    decision: allow_with_constraints\n"
        "    constraints: { max_runtime_sec: 1 }\n"
    )
    work = tmp_path / "srv"
    work.mkdir()
    release = threading.Event()
    with gavel_server(work, policy) as srv:
        agent, executor = clients(srv)

        @guard(agent, executor, topic="job.x.run", action="run")
        def slow() -> None:
            release.wait(10)

        job_id = f"g-slow-{uuid.uuid4().hex[:8]}"
        with pytest.raises(TimeoutError):
            slow(gavel_job_id=job_id)
        release.set()
        assert agent.state(job_id) == "failed"
