"""Receipt verification (pure-Python Ed25519 against RFC 8032 vectors and
the server's real receipts) and the asyncio client, against a real server."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import uuid

import pytest
from test_client import cli, payment, read_job

from gavel_client import AsyncGavel, Gavel, GavelError, WaitTimeout, guard, verify_receipt
from gavel_client._ed25519 import verify

# RFC 8032, section 7.1, tests 1 and 2.
VECTORS = [
    (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
]


@pytest.mark.parametrize("public,message,signature", VECTORS)
def test_ed25519_verifies_the_rfc_vectors_and_nothing_else(public, message, signature):
    pk, msg, sig = bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature)
    assert verify(pk, msg, sig)
    assert not verify(pk, msg + b"!", sig)
    assert not verify(pk, msg, sig[:-1] + bytes([sig[-1] ^ 1]))
    assert not verify(pk, msg, sig[:32] + (int.from_bytes(sig[32:], "little") + 2**253).to_bytes(32, "little"))
    assert not verify(bytes(32), msg, sig)


def keys_url(server):
    return f"http://{server['http']}/api/v1/keys"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_bind_verifies_the_receipt_against_the_servers_jwks(server):
    agent = Gavel(server["addr"], server["tokens"]["dev-agent"])
    executor = Gavel(server["addr"], server["tokens"]["dev-executor"], jwks=keys_url(server))
    job = read_job(f"py-rcpt-{uuid.uuid4().hex[:8]}")
    d = agent.decide(job)
    b = executor.bind(d.job_id, job, d.policy_snapshot)
    assert b.receipt_claims["job_hash"] == b.job_hash == d.job_hash
    assert b.receipt_claims["bind_id"] == b.bind_id
    # By default the keys come from the server itself, and every receipt is checked.
    default = Gavel(server["addr"], server["tokens"]["dev-executor"])
    job2 = read_job(f"py-rcpt-{uuid.uuid4().hex[:8]}")
    d2 = agent.decide(job2)
    b2 = default.bind(d2.job_id, job2, d2.policy_snapshot)
    assert default.jwks == executor.jwks and b2.receipt_claims["job_hash"] == b2.job_hash
    job3 = read_job(f"py-rcpt-{uuid.uuid4().hex[:8]}")
    d3 = agent.decide(job3)
    assert Gavel(server["addr"], server["tokens"]["dev-executor"], jwks=False).bind(d3.job_id, job3, d3.policy_snapshot).receipt_claims is None

    # Altered payload, or another key under the same kid: refused.
    h, p, s = b.receipt.split(".")
    claims = json.loads(base64.urlsafe_b64decode(p + "=="))
    claims["job_hash"] = "0" * 64
    with pytest.raises(GavelError) as e:
        verify_receipt(f"{h}.{b64(json.dumps(claims).encode())}.{s}", executor.jwks)
    assert e.value.reason == "RECEIPT_INVALID"
    with pytest.raises(GavelError) as e:
        verify_receipt(b.receipt, executor.jwks, now=claims["exp"] + 1)
    assert "expired" in e.value.message


def test_a_receipt_signed_by_another_key_is_refused_and_the_tool_never_runs(server):
    good = Gavel(server["addr"], "x", jwks=keys_url(server)).jwks
    wrong = {"keys": [{**k, "x": b64(bytes.fromhex(VECTORS[0][0]))} for k in good["keys"]]}
    agent = Gavel(server["addr"], server["tokens"]["dev-agent"])
    executor = Gavel(server["addr"], server["tokens"]["dev-executor"], jwks=wrong)
    ran = []

    @guard(agent, executor, topic="job.repo.read", action="read", target="src/lib.rs")
    def read(path: str) -> None:
        ran.append(path)

    job_id = f"py-wrongkey-{uuid.uuid4().hex[:8]}"
    with pytest.raises(GavelError) as e:
        read(path="src/lib.rs", gavel_job_id=job_id)
    assert e.value.reason == "RECEIPT_INVALID"
    assert ran == []
    # The binding that could not be trusted is closed as failed.
    assert agent.state(job_id) == "failed"


def test_rejected_and_tampered_calls_never_run(server):
    agent = Gavel(server["addr"], server["tokens"]["dev-agent"])
    executor = Gavel(server["addr"], server["tokens"]["dev-executor"])
    ran = []
    g = guard(agent, executor, topic="job.finance.pay", action="pay", target="vendor-acme", risk_tags=["payment"], timeout=60)

    @g
    def pay(invoice: str, amount_usd: int) -> None:
        ran.append(invoice)

    job_id = f"py-rej-{uuid.uuid4().hex[:8]}"
    t = threading.Thread(target=lambda: cli(server, "alice", "reject", job_id, "--reason", "not this vendor"))
    assert agent.decide(g.job({"invoice": "INV-1", "amount_usd": 5}, job_id)).state == "pending"
    t.start()
    with pytest.raises(GavelError) as e:
        pay(invoice="INV-1", amount_usd=5, gavel_job_id=job_id)
    t.join()
    assert e.value.reason == "REJECTED"

    # Approved for one amount, then asked to run with another.
    job_id = f"py-tamper-{uuid.uuid4().hex[:8]}"
    assert g.decided({"invoice": "INV-2", "amount_usd": 5}, job_id).state == "pending"
    cli(server, "alice", "approve", job_id, "--reason", "ok")
    cli(server, "bob", "approve", job_id, "--reason", "ok")
    with pytest.raises(GavelError) as e:
        g.bind_approved({"invoice": "INV-2", "amount_usd": 5000}, job_id)
    assert e.value.reason == "HASH_MISMATCH"
    with pytest.raises(GavelError) as e:
        pay(invoice="INV-2", amount_usd=5000, gavel_job_id=job_id)
    assert e.value.reason == "ALREADY_EXISTS"
    assert ran == []
    bound = g.bind_approved({"invoice": "INV-2", "amount_usd": 5}, job_id)
    assert g.run_bound(bound, pay.__wrapped__) is None
    assert ran == ["INV-2"] and agent.state(job_id) == "succeeded"


def test_expiry_never_runs_the_tool(tmp_path):
    from conftest import gavel_server

    policy = tmp_path / "brief.yaml"
    policy.write_text(
        "version: v1\nname: brief\ndefaults:\n  decision: require_approval\n"
        "  approval: { approvers: 1, roles: [reviewer], timeout: 1s }\nrules: []\n"
    )
    work = tmp_path / "srv"
    work.mkdir()
    with gavel_server(work, policy, ["--sweep-interval-secs", "1"]) as srv:
        agent = Gavel(srv["addr"], srv["tokens"]["dev-agent"])
        executor = Gavel(srv["addr"], srv["tokens"]["dev-executor"])
        ran = []

        @guard(agent, executor, topic="job.x.run", action="run", timeout=60)
        def act() -> None:
            ran.append(1)

        with pytest.raises(GavelError) as e:
            act(gavel_job_id="py-expire-1")
        assert e.value.reason == "EXPIRED"
        assert ran == []


def test_the_asyncio_client_decides_waits_binds_and_guards(server):
    async def main():
        async with AsyncGavel(server["addr"], server["tokens"]["dev-agent"]) as agent, AsyncGavel(
            server["addr"], server["tokens"]["dev-executor"], jwks=keys_url(server)
        ) as executor:
            job = payment(f"py-async-{uuid.uuid4().hex[:8]}")
            d = await agent.decide(job)
            assert d.state == "pending"
            with pytest.raises(WaitTimeout):
                await agent.wait(d.job_id, timeout=0.3)
            approver = threading.Thread(
                target=lambda: (
                    cli(server, "alice", "approve", d.job_id, "--reason", "ok"),
                    cli(server, "bob", "approve", d.job_id, "--reason", "ok"),
                )
            )
            approver.start()
            done = await agent.wait(d.job_id, timeout=60)
            approver.join()
            assert done.state == "approved" and done.primary_rule == d.primary_rule
            b = await executor.bind(d.job_id, job, d.policy_snapshot)
            assert b.params == job["params"] and b.receipt_claims["bind_id"] == b.bind_id
            assert await executor.report(d.job_id, b.bind_id, True) == "succeeded"

            ran = []

            @guard(agent, executor, topic="job.repo.read", action="read", target="a.txt")
            async def read(path: str) -> str:
                ran.append(path)
                return path.upper()

            assert await read(path="a.txt") == "A.TXT"
            assert ran == ["a.txt"]

    asyncio.run(main())


def test_wait_resumes_after_the_stream_drops_and_the_server_comes_back(tmp_path):
    import signal
    import socket

    from conftest import gavel_server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    work = tmp_path / "srv"
    work.mkdir()
    grpc_addr = f"127.0.0.1:{port}"
    with gavel_server(work, grpc=grpc_addr) as first:
        agent = Gavel(grpc_addr, first["tokens"]["dev-agent"])
        d = agent.decide(payment(f"py-resume-{uuid.uuid4().hex[:8]}"))
        assert d.state == "pending"
        outcome = []
        waiter = threading.Thread(target=lambda: outcome.append(agent.wait(d.job_id, timeout=120)))
        waiter.start()
        # The server dies under the waiting client: its stream drops.
        first["proc"].send_signal(signal.SIGKILL)
        first["proc"].wait(timeout=30)
        assert waiter.is_alive()
        with gavel_server(work, grpc=grpc_addr) as second:
            cli(second, "alice", "approve", d.job_id, "--reason", "ok")
            cli(second, "bob", "approve", d.job_id, "--reason", "ok")
            waiter.join(timeout=120)
        assert [o.state for o in outcome] == ["approved"]
