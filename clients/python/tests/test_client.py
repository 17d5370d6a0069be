"""gavel-client against a real server: decide, wait, bind, report, refusals,
and the job hash computed here against the server's and the rfc8785 oracle."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import uuid

import pytest
import rfc8785

from gavel_client import Gavel, GavelError, WaitTimeout, canonical, canonical_job, job_hash


def client(server, who):
    return Gavel(server["addr"], server["tokens"][who])


def cli(server, who, *args):
    env = dict(os.environ, GAVEL_TOKEN=server["tokens"][who], GAVEL_SERVER=f"http://{server['addr']}")
    subprocess.run([server["bin"], *args], env=env, check=True, cwd=server["work"], capture_output=True)


def payment(job_id):
    return {
        "job_id": job_id,
        "topic": "job.finance.pay",
        "action": "pay",
        "target": "vendor-acme",
        "risk_tags": ["payment"],
        "attributes": {"cost": 4200},
        "params": {"invoice": "INV-7", "amount_usd": 4200, "to": "acme"},
        "proposal": {"title": "Pay ACME", "why": "invoice due", "reversible": False, "estimated_cost_usd": 4200},
    }


def read_job(job_id):
    return {"job_id": job_id, "topic": "job.repo.read", "action": "read", "target": "src/main.rs", "params": {"path": "src/main.rs"}}


def test_an_allowed_job_binds_at_once_and_runs_the_canonical_params(server):
    agent, executor = client(server, "dev-agent"), client(server, "dev-executor")
    job = read_job(f"py-read-{uuid.uuid4().hex[:8]}")
    d = agent.decide(job)
    assert d.decision == "allow" and d.state == "allowed"
    assert d.job_hash == job_hash(job)
    b = executor.bind(d.job_id, job, d.policy_snapshot)
    assert b.params == job["params"]
    assert b.receipt.count(".") == 2
    assert executor.report(d.job_id, b.bind_id, True, "read it") == "succeeded"
    with pytest.raises(GavelError) as e:
        executor.bind(d.job_id, job, d.policy_snapshot)
    assert e.value.reason == "ALREADY_BOUND"


def test_approval_is_waited_for_and_the_approved_bytes_run(server):
    agent, executor = client(server, "dev-agent"), client(server, "dev-executor")
    job = payment(f"py-pay-{uuid.uuid4().hex[:8]}")
    d = agent.decide(job)
    assert d.decision == "require_approval" and d.state == "pending"
    # Idempotent: the same job id and content replays the decision.
    again = agent.decide(job)
    assert again.replayed and again.job_hash == d.job_hash

    def approve():
        cli(server, "alice", "approve", d.job_id, "--reason", "invoice matches")
        cli(server, "bob", "approve", d.job_id, "--reason", "amount checked")

    t = threading.Thread(target=approve)
    t.start()
    assert agent.wait(d.job_id, timeout=60).state == "approved"
    t.join()

    tampered = json.loads(json.dumps(job))
    tampered["params"]["amount_usd"] = 42000
    with pytest.raises(GavelError) as e:
        executor.bind(d.job_id, tampered, d.policy_snapshot)
    assert e.value.reason == "HASH_MISMATCH"

    b = executor.bind(d.job_id, job, d.policy_snapshot)
    assert b.params["amount_usd"] == 4200
    assert sorted(b.approvers) == ["alice", "bob"]


def test_waiting_past_the_deadline_raises(server):
    agent = client(server, "dev-agent")
    d = agent.decide(payment(f"py-wait-{uuid.uuid4().hex[:8]}"))
    with pytest.raises(WaitTimeout) as e:
        agent.wait(d.job_id, timeout=0.5)
    assert e.value.reason == "PENDING"


def test_refusals_carry_the_machine_readable_reason(server):
    agent, executor = client(server, "dev-agent"), client(server, "dev-executor")
    deny = {"job_id": f"py-deny-{uuid.uuid4().hex[:8]}", "topic": "job.db.write", "action": "delete", "target": "production_users", "risk_tags": ["prod", "write", "destructive"]}
    d = agent.decide(deny)
    assert d.decision == "deny"
    with pytest.raises(GavelError) as e:
        executor.bind(d.job_id, deny, d.policy_snapshot)
    assert e.value.reason == "DENIED"
    with pytest.raises(GavelError) as e:
        agent.decide({**read_job(d.job_id), "action": "read"})
    assert e.value.reason == "ALREADY_EXISTS"
    with pytest.raises(GavelError) as e:
        Gavel(server["addr"], "wrong-token").decide(read_job("py-x"))
    assert e.value.reason == "UNAUTHENTICATED"
    with pytest.raises(GavelError) as e:
        agent.decide({"job_id": "bad id with spaces"})
    assert e.value.reason == "INVALID_ARGUMENT" and e.value.field == "job.job_id"


@pytest.mark.parametrize(
    "value",
    [
        0, -0.0, 1, -1, 1.5, 1e21, 1e-7, 1.2345678901234568e20, 0.1, 2**53 - 1, 2.0**53, 5e-324, 1.7976931348623157e308,
        "ünïcödé \u2028 \x01 \"q\" \\", {"b": 1, "a": [True, None, {"\u20ac": 1, "\U0001f600": 2, "z": 3}]},
    ],
)
def test_the_canonical_form_matches_the_rfc8785_oracle(value):
    assert canonical(value).encode() == rfc8785.dumps(value)


def test_large_integers_only_in_the_form_a_double_takes():
    # What the server prints for a large double reads back the same; an
    # integer no double is exactly is refused, as the server refuses it.
    assert canonical(6629298664374272000) == canonical(6.629298664374272e18)
    for bad in [2**53 + 1, 18446744073709551615]:
        with pytest.raises(ValueError):
            canonical(bad)


def test_the_job_hash_matches_the_servers_for_the_example_jobs(server):
    agent = client(server, "dev-agent")
    root = os.path.join(os.path.dirname(__file__), "..", "..", "..", "examples", "jobs")
    for name in sorted(os.listdir(root)):
        with open(os.path.join(root, name)) as f:
            job = json.load(f)
        job["job_id"] = f"py-hash-{uuid.uuid4().hex[:8]}"
        doc = canonical_job(job)
        assert canonical(doc).encode() == rfc8785.dumps(doc)
        assert agent.decide(job).job_hash == job_hash(job), name
