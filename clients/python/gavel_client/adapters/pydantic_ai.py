"""Pydantic AI: tools gated by gavel through Pydantic AI's deferred tool
calls. A call that must wait for people raises ``ApprovalRequired``; the
deferred tool calls handler waits for gavel and answers each request with
what gavel decided; the tool runs only with the bound arguments.

    from pydantic_ai import Agent, DeferredToolRequests, RunContext
    from pydantic_ai.capabilities import HandleDeferredToolCalls
    from gavel_client import AsyncGavel, guard
    from gavel_client.adapters.pydantic_ai import gated, gavel_approvals

    agent_client, executor = AsyncGavel(addr, agent_token), AsyncGavel(addr, executor_token)
    bot = Agent(model, output_type=[str, DeferredToolRequests],
                capabilities=[HandleDeferredToolCalls(handler=gavel_approvals(agent_client, timeout=600))])

    @bot.tool
    @gated(guard(agent_client, executor, topic="job.finance.pay", action="pay", risk_tags=["payment"]))
    async def pay(ctx: RunContext, invoice: str, amount_usd: int) -> str: ...

- Each call's job id is ``pai-<tool call id>``.
- A deny, a rejection or an expiry: the tool does not run and the model
  gets gavel's refusal as the tool's result.
- Pending: ``ApprovalRequired`` with ``{"gavel_job_id", "rule", "reason"}``
  as metadata. ``gavel_approvals`` waits for the job. Approved, the call is
  resolved as approved; rejected or expired, as ``ToolDenied`` with the
  reason. Still pending at the handler's timeout, the call is left
  unresolved, and the run ends with ``DeferredToolRequests`` that can be
  resolved later. Without the handler, resolve them yourself;
  an approval given in Pydantic AI alone does not run anything, because the
  tool binds in gavel first.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from gavel_client.errors import GavelError, WaitTimeout
from gavel_client.guard import RUNNABLE, guard, job_id_for, refuse_unless_runnable

PREFIX = "pai"


def gated(g: guard) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Gates a Pydantic AI tool (whose first parameter is the ``RunContext``)
    behind ``g`` (with :class:`gavel_client.AsyncGavel` clients)."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(fn)

        @functools.wraps(fn)
        async def wrapper(ctx: Any, *args: Any, **kwargs: Any) -> Any:
            from pydantic_ai import ApprovalRequired

            params = dict(signature.bind(ctx, *args, **kwargs).arguments)
            params.pop(next(iter(signature.parameters)))
            job_id = job_id_for(PREFIX, ctx.tool_call_id)
            try:
                d = await g.adecided(params, job_id)
                refuse_unless_runnable(d)
                if d.state == "pending":
                    if not ctx.tool_call_approved:
                        raise ApprovalRequired(
                            metadata={"gavel_job_id": job_id, "rule": d.primary_rule, "reason": d.reason}
                        )
                    d = await g.agent.get(job_id)
                    if d.state == "pending":
                        d = await g.agent.wait(job_id, g.timeout)
                    refuse_unless_runnable(d)
                bound = await g.abind_approved(params, job_id, d)
            except GavelError as e:
                return f"gavel refused this call ({e.reason}): {e.message}"
            return await g.arun_bound(bound, fn, ctx)

        return wrapper

    return decorate


def gavel_approvals(agent_client: Any, timeout: float) -> Callable[..., Any]:
    """A deferred tool calls handler (for ``HandleDeferredToolCalls``) that
    answers each gavel-gated approval request with gavel's outcome."""

    async def handle(_ctx: Any, requests: Any) -> Any:
        from pydantic_ai import DeferredToolResults, ToolDenied

        results = DeferredToolResults()
        for part in requests.approvals:
            job_id = (requests.metadata.get(part.tool_call_id) or {}).get("gavel_job_id")
            if job_id is None:
                continue  # not a gavel call: another handler's
            try:
                d = await agent_client.wait(job_id, timeout)
            except WaitTimeout:
                continue  # left unresolved: the run returns the request
            if d.state in RUNNABLE:
                results.approvals[part.tool_call_id] = True
            else:
                results.approvals[part.tool_call_id] = ToolDenied(f"gavel: job {job_id} is {d.state}; the tool did not run")
        return results if results.approvals else None

    return handle
