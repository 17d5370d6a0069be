"""The OpenAI Agents SDK adapter, with the real SDK (its ScriptedModel
stands in for the LLM) against a real gavel server."""

from __future__ import annotations

import asyncio
import threading
import uuid

import pytest
from agents import Agent, Runner, function_tool, set_tracing_disabled
from agents.testing import ScriptedModel, assistant_message, function_call
from test_client import cli

from gavel_client import AsyncGavel, GavelError
from gavel_client.adapters.openai_agents import GavelGate

set_tracing_disabled(True)


def run(server, body):
    async def main():
        async with AsyncGavel(server["addr"], server["tokens"]["dev-agent"]) as a, AsyncGavel(
            server["addr"], server["tokens"]["dev-executor"]
        ) as e:
            await body(a, e)

    asyncio.run(main())


def test_an_approved_call_runs_once_with_the_bound_arguments(server):
    paid = []
    call_id = f"call_{uuid.uuid4().hex[:12]}"

    async def body(agent_client, executor):
        gate = GavelGate(agent_client, executor, topic="job.finance.pay", action="pay", target="vendor-acme", risk_tags=["payment"])

        @function_tool(needs_approval=gate.needs_approval, tool_input_guardrails=[gate.guardrail])
        @gate.runs
        async def pay(invoice: str, amount_usd: int) -> str:
            """Pay an invoice."""
            paid.append((invoice, amount_usd))
            return f"paid {invoice}"

        model = ScriptedModel([[function_call("pay", {"invoice": "INV-9", "amount_usd": 900}, call_id=call_id)], [assistant_message("done")]])
        bot = Agent(name="payer", model=model, tools=[pay])
        result = await Runner.run(bot, "pay INV-9")
        assert len(result.interruptions) == 1 and paid == []
        job_id = gate.job_id(call_id)
        assert (await agent_client.get(job_id)).state == "pending"

        # Approving in the SDK alone changes nothing: resolve asks gavel.
        approver = threading.Thread(
            target=lambda: (
                cli(server, "alice", "approve", job_id, "--reason", "invoice matches"),
                cli(server, "bob", "approve", job_id, "--reason", "amount checked"),
            )
        )
        approver.start()
        state = result.to_state()
        await gate.resolve(state, result.interruptions, timeout=60)
        approver.join()
        result = await Runner.run(bot, state)
        assert result.final_output == "done"
        assert paid == [("INV-9", 900)]
        assert (await agent_client.get(job_id)).state == "succeeded"

        # The wrapped tool never runs a call the guardrail did not bind.
        async def again(invoice: str, amount_usd: int) -> None:
            paid.append((invoice, amount_usd))

        with pytest.raises(GavelError) as e:
            await gate.runs(again)(invoice="INV-9", amount_usd=900)
        assert e.value.reason == "NOT_BOUND"
        assert paid == [("INV-9", 900)]

    run(server, body)


def test_allowed_calls_run_at_once_and_denied_or_rejected_ones_never(server):
    ran = []

    async def body(agent_client, executor):
        reads = GavelGate(agent_client, executor, topic="job.repo.read", action="read", target="src/lib.rs")
        drops = GavelGate(agent_client, executor, topic="job.db.write", action="delete", target="production_users", risk_tags=["prod", "write"])
        pays = GavelGate(agent_client, executor, topic="job.finance.pay", action="pay", risk_tags=["payment"])

        @function_tool(needs_approval=reads.needs_approval, tool_input_guardrails=[reads.guardrail])
        @reads.runs
        async def read_file(path: str) -> str:
            """Read a file."""
            ran.append(("read", path))
            return "fn main() {}"

        @function_tool(needs_approval=drops.needs_approval, tool_input_guardrails=[drops.guardrail])
        @drops.runs
        async def drop_table(table: str) -> str:
            """Drop a table."""
            ran.append(("drop", table))
            return "dropped"

        @function_tool(needs_approval=pays.needs_approval, tool_input_guardrails=[pays.guardrail])
        @pays.runs
        async def pay(invoice: str) -> str:
            """Pay."""
            ran.append(("pay", invoice))
            return "paid"

        ids = [f"call_{uuid.uuid4().hex[:12]}" for _ in range(3)]
        model = ScriptedModel(
            [
                [
                    function_call("read_file", {"path": "src/lib.rs"}, call_id=ids[0]),
                    function_call("drop_table", {"table": "users"}, call_id=ids[1]),
                    function_call("pay", {"invoice": "INV-1"}, call_id=ids[2]),
                ],
                [assistant_message("ok")],
            ]
        )
        bot = Agent(name="ops", model=model, tools=[read_file, drop_table, pay])
        result = await Runner.run(bot, "go")
        assert [i.tool_name for i in result.interruptions] == ["pay"]
        cli(server, "carol", "reject", pays.job_id(ids[2]), "--reason", "unknown vendor")
        state = result.to_state()
        await pays.resolve(state, result.interruptions, timeout=60)
        result = await Runner.run(bot, state)
        assert result.final_output == "ok"
        assert ran == [("read", "src/lib.rs")]
        assert (await agent_client.get(reads.job_id(ids[0]))).state == "succeeded"
        assert (await agent_client.get(drops.job_id(ids[1]))).decision == "deny"
        assert (await agent_client.get(pays.job_id(ids[2]))).state == "rejected"
        # The model was told why the denied call did not run.
        told = str(model.calls[-1].input)
        assert "gavel refused this call (DENIED)" in told

    run(server, body)
