"""OpenAI Agents SDK: gavel decides every call of a function tool, people
approve through gavel, and the tool runs only with the bound arguments.

    from agents import Agent, Runner, function_tool
    from gavel_client import AsyncGavel
    from gavel_client.adapters.openai_agents import GavelGate

    gate = GavelGate(AsyncGavel(addr, agent_token), AsyncGavel(addr, executor_token),
                     topic="job.finance.pay", action="pay", risk_tags=["payment"])

    @function_tool(needs_approval=gate.needs_approval, tool_input_guardrails=[gate.guardrail])
    @gate.runs
    async def pay(invoice: str, amount_usd: int) -> str: ...

    result = await Runner.run(agent, "pay INV-9")
    while result.interruptions:                 # calls gavel said must wait
        state = result.to_state()
        await gate.resolve(state, result.interruptions, timeout=600)
        result = await Runner.run(agent, state)

- ``needs_approval`` decides the call (its id is ``oa-<call id>``) and
  interrupts the run when gavel says the call must wait for people.
- ``resolve`` waits for each of those jobs in gavel and approves or rejects
  the interruption in the SDK's state to match. Approving in the SDK alone
  does nothing: the guardrail still asks gavel.
- ``guardrail`` (a tool input guardrail) binds the job with the exact
  arguments the tool is about to get. A deny, a rejection, an expiry,
  changed arguments (``HASH_MISMATCH``) or a second run (``ALREADY_BOUND``)
  rejects the call: the model is told why, and the tool does not run.
- ``runs`` wraps the tool so that it runs with the arguments Bind returned,
  and reports the outcome. A call that was not bound by the guardrail does
  not run.
"""

from __future__ import annotations

import functools
import inspect
import json
from typing import Any, Callable

from gavel_client._jcs import job_hash
from gavel_client.errors import GavelError
from gavel_client.guard import guard, job_id_for


class GavelGate(guard):
    """A :class:`gavel_client.guard` for one tool, with the SDK's hooks.
    ``agent`` and ``executor`` are :class:`gavel_client.AsyncGavel` clients."""

    prefix = "oa"

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._bound: dict[str, Any] = {}

    def job_id(self, call_id: str) -> str:
        return job_id_for(self.prefix, call_id)

    async def needs_approval(self, _ctx: Any, params: dict, call_id: str) -> bool:
        d = await self.adecided(dict(params), self.job_id(call_id))
        return d.state == "pending"

    async def resolve(self, state: Any, interruptions: list, timeout: float) -> None:
        """Waits in gavel for each interrupted call and mirrors the outcome
        into the SDK's ``state`` (approve or reject with gavel's reason)."""
        for item in interruptions:
            call_id = getattr(item.raw_item, "call_id", None) or item.raw_item.get("call_id")
            d = await self.agent.wait(self.job_id(call_id), timeout)
            if d.state in ("approved", "allowed"):
                state.approve(item)
            else:
                state.reject(item, rejection_message=f"gavel: job {d.job_id} is {d.state}; the tool did not run")

    def _guardrail(self):
        from agents import ToolGuardrailFunctionOutput, tool_input_guardrail

        @tool_input_guardrail(name="gavel")
        async def gavel_bind(data) -> ToolGuardrailFunctionOutput:
            ctx = data.context
            try:
                params = json.loads(ctx.tool_arguments or "{}")
                job_id = self.job_id(ctx.tool_call_id)
                try:
                    bound = await self.abind_approved(params, job_id)
                except GavelError as e:
                    if e.reason != "NOT_FOUND":
                        raise
                    # needs_approval did not run for this call: decide now.
                    bound = await self.abind_approved(params, job_id, await self.adecided(params, job_id))
            except GavelError as e:
                return ToolGuardrailFunctionOutput.reject_content(
                    f"gavel refused this call ({e.reason}): {e.message}", output_info={"reason": e.reason}
                )
            except ValueError as e:
                return ToolGuardrailFunctionOutput.reject_content(f"gavel refused this call: arguments are not JSON: {e}")
            self._bound[bound.job_hash] = bound
            return ToolGuardrailFunctionOutput.allow(output_info={"job_id": job_id, "bind_id": bound.bind_id})

        return gavel_bind

    @functools.cached_property
    def guardrail(self):
        """The tool input guardrail that binds (build it once per gate)."""
        return self._guardrail()

    def runs(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Runs the tool with the bound arguments and reports the outcome."""

        signature = inspect.signature(fn)

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            from agents import RunContextWrapper

            named = signature.bind(*args, **kwargs).arguments
            context = [v for v in named.values() if isinstance(v, RunContextWrapper)]
            params = {k: v for k, v in named.items() if not isinstance(v, RunContextWrapper)}
            bound = self._bound.pop(job_hash(self.job(params, "x")), None)
            if bound is None:
                raise GavelError("NOT_BOUND", "this call was not bound by gavel's guardrail; it does not run")
            return await self.arun_bound(bound, fn, *context)

        return wrapper
