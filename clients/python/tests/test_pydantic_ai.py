"""The Pydantic AI adapter, with the real Agent, ApprovalRequired and the
HandleDeferredToolCalls capability (a FunctionModel stands in for the LLM)
against a real gavel server."""

from __future__ import annotations

import asyncio
import threading
import uuid

from pydantic_ai import Agent, DeferredToolRequests, RunContext
from pydantic_ai.capabilities import HandleDeferredToolCalls
from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import FunctionModel
from test_client import cli

from gavel_client import AsyncGavel, guard
from gavel_client.adapters.pydantic_ai import PREFIX, gated, gavel_approvals


def scripted(calls):
    """Calls the tools once, then answers with the tool results."""

    def respond(messages, _info):
        returns = [p for m in messages for p in getattr(m, "parts", []) if isinstance(p, ToolReturnPart)]
        if not returns:
            return ModelResponse(parts=[ToolCallPart(name, args, tool_call_id=i) for name, args, i in calls])
        return ModelResponse(parts=[TextPart(" | ".join(str(r.content) for r in returns))])

    return FunctionModel(respond)


def test_the_handler_waits_for_gavel_and_the_tool_runs_bound(server):
    ran = []
    pay_id, drop_id = f"p-{uuid.uuid4().hex[:8]}", f"d-{uuid.uuid4().hex[:8]}"
    job = f"{PREFIX}-{pay_id}"

    async def main():
        async with AsyncGavel(server["addr"], server["tokens"]["dev-agent"]) as a, AsyncGavel(
            server["addr"], server["tokens"]["dev-executor"]
        ) as e:
            model = scripted([("pay", {"invoice": "INV-3", "amount_usd": 300}, pay_id), ("drop_table", {"table": "users"}, drop_id)])
            approvers = []
            waiting = gavel_approvals(a, timeout=60)

            async def handler(ctx, requests):
                # People approve once the run has asked, from another thread.
                assert [p.tool_call_id for p in requests.approvals] == [pay_id]
                t = threading.Thread(
                    target=lambda: (cli(server, "alice", "approve", job, "--reason", "ok"), cli(server, "bob", "approve", job, "--reason", "ok"))
                )
                t.start()
                approvers.append(t)
                return await waiting(ctx, requests)

            bot = Agent(model, output_type=[str, DeferredToolRequests], capabilities=[HandleDeferredToolCalls(handler=handler)])

            @bot.tool
            @gated(guard(a, e, topic="job.finance.pay", action="pay", target="vendor-acme", risk_tags=["payment"], timeout=60))
            async def pay(ctx: RunContext, invoice: str, amount_usd: int) -> str:
                """Pay an invoice."""
                ran.append(("pay", invoice, amount_usd))
                return "paid"

            @bot.tool
            @gated(guard(a, e, topic="job.db.write", action="delete", target="production_users", risk_tags=["prod", "write"]))
            async def drop_table(ctx: RunContext, table: str) -> str:
                """Drop a table."""
                ran.append(("drop", table))
                return "dropped"

            result = await bot.run("pay INV-3 and drop users")
            for t in approvers:
                t.join()
            assert ran == [("pay", "INV-3", 300)]
            assert "paid" in result.output and "gavel refused this call (DENIED)" in result.output
            assert (await a.get(job)).state == "succeeded"

    asyncio.run(main())


def test_without_the_handler_the_run_returns_the_request_and_rejection_never_runs(server):
    ran = []
    call_id = f"p-{uuid.uuid4().hex[:8]}"

    async def main():
        async with AsyncGavel(server["addr"], server["tokens"]["dev-agent"]) as a, AsyncGavel(
            server["addr"], server["tokens"]["dev-executor"]
        ) as e:
            bot = Agent(scripted([("pay", {"invoice": "INV-4"}, call_id)]), output_type=[str, DeferredToolRequests])

            @bot.tool
            @gated(guard(a, e, topic="job.finance.pay", action="pay", risk_tags=["payment"], timeout=60))
            async def pay(ctx: RunContext, invoice: str) -> str:
                """Pay."""
                ran.append(invoice)
                return "paid"

            first = await bot.run("pay INV-4")
            assert isinstance(first.output, DeferredToolRequests)
            job = first.output.metadata[call_id]["gavel_job_id"]
            assert job == f"{PREFIX}-{call_id}"
            cli(server, "carol", "reject", job, "--reason", "not ours")
            results = await gavel_approvals(a, timeout=60)(None, first.output)
            second = await bot.run(message_history=first.all_messages(), deferred_tool_results=results)
            assert "did not run" in second.output
            assert ran == []

            # An approval given in Pydantic AI alone does not run the tool.
            bot2 = Agent(scripted([("pay_now", {"invoice": "INV-5"}, call_id + "b")]), output_type=[str, DeferredToolRequests])

            @bot2.tool
            @gated(guard(a, e, topic="job.finance.pay", action="pay", risk_tags=["payment"], timeout=0.2))
            async def pay_now(ctx: RunContext, invoice: str) -> str:
                """Pay."""
                ran.append(invoice)
                return "paid"

            first = await bot2.run("pay INV-5")
            forced = first.output.build_results(approve_all=True)
            second = await bot2.run(message_history=first.all_messages(), deferred_tool_results=forced)
            assert "gavel refused this call (PENDING)" in second.output
            assert ran == []

    asyncio.run(main())
