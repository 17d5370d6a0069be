"""LangChain v1 agents (``create_agent``) and LangGraph: a tool-call
middleware that decides every tool call in gavel, pauses the graph with
``interrupt()`` while people approve, and runs the tool only with the bound
arguments.

    from langchain.agents import create_agent
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.types import Command
    from gavel_client import Gavel, guard
    from gavel_client.adapters.langchain import GavelMiddleware

    agent_client, executor = Gavel(addr, agent_token), Gavel(addr, executor_token)
    middleware = GavelMiddleware({
        "pay": guard(agent_client, executor, topic="job.finance.pay", action="pay", risk_tags=["payment"]),
        "read_file": guard(agent_client, executor, topic="job.repo.read", action="read"),
    })
    graph = create_agent(model, tools=[pay, read_file], middleware=[middleware], checkpointer=InMemorySaver())

    out = graph.invoke({"messages": [...]}, config)
    for pending in out.get("__interrupt__", []):      # {"gavel_job_id", "tool", "args", "reason", ...}
        agent_client.wait(pending.value["gavel_job_id"], timeout=600)
    out = graph.invoke(Command(resume=True), config)  # runs the approved call, bound

Each tool call's job id is ``lc-<tool call id>``. The middleware:

- denies at once when gavel denies (the model gets an error ``ToolMessage``
  naming the rule; the tool does not run);
- calls ``interrupt()`` when the job waits for approval. On resume it reads
  the job again: approved, it binds and runs; still pending, it waits up to
  the guard's ``timeout`` and never runs on a timeout; rejected or
  expired, it answers with an error ``ToolMessage``;
- runs the tool with **the params Bind returned**, and reports success,
  or failure (an error ``ToolMessage`` or an exception);
- refuses a tool it has no guard for, unless its name is in
  ``ungated`` (fail closed: a new tool is never run unreviewed).

Sync graphs (``invoke``/``stream``) use :class:`gavel_client.Gavel`
clients in the guards.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from gavel_client.errors import GavelError
from gavel_client.guard import guard, job_id_for, refuse_unless_runnable

try:  # The middleware base class, when LangChain is installed.
    from langchain.agents.middleware import AgentMiddleware as _Base
except ImportError:  # pragma: no cover - the module is unusable without LangChain
    _Base = object


def _refusal(call: dict, text: str):
    from langchain_core.messages import ToolMessage

    return ToolMessage(content=text, tool_call_id=call["id"], name=call["name"], status="error")


class GavelMiddleware(_Base):
    """Tool-call middleware: one :class:`gavel_client.guard` per tool name."""

    prefix = "lc"

    def __init__(self, guards: dict[str, guard], ungated: Iterable[str] = ()):
        super().__init__()
        self.guards = dict(guards)
        self.ungated = frozenset(ungated)

    def job_id(self, call_id: str) -> str:
        return job_id_for(self.prefix, call_id)

    def wrap_tool_call(self, request: Any, handler: Callable[[Any], Any]) -> Any:
        from langgraph.types import interrupt

        call = request.tool_call
        name = call["name"]
        if name in self.ungated:
            return handler(request)
        g = self.guards.get(name)
        if g is None:
            return _refusal(call, f"gavel: no guard is configured for the tool `{name}`; it does not run")
        params = dict(call.get("args") or {})
        job_id = self.job_id(call["id"])
        try:
            d = g.decided(params, job_id)
            refuse_unless_runnable(d)
            if d.state == "pending":
                interrupt(
                    {
                        "gavel_job_id": job_id,
                        "tool": name,
                        "args": params,
                        "rule": d.primary_rule,
                        "reason": d.reason,
                    }
                )
                # Resumed: the job may have been decided meanwhile.
                d = g.agent.get(job_id)
                if d.state == "pending":
                    d = g.agent.wait(job_id, g.timeout)
                refuse_unless_runnable(d)
            bound = g.bind_approved(params, job_id, d)
        except GavelError as e:
            return _refusal(call, f"gavel refused this call ({e.reason}): {e.message}")
        run = request.override(tool_call={**call, "args": bound.params})
        try:
            result = handler(run)
        except BaseException as e:
            g.executor.report(job_id, bound.bind_id, False, f"{type(e).__name__}: {e}"[:1000])
            raise
        failed = getattr(result, "status", None) == "error"
        detail = str(getattr(result, "content", ""))[:1000] if failed else ""
        g.executor.report(job_id, bound.bind_id, not failed, detail)
        return result
