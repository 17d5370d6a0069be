"""The LangChain v1 / LangGraph adapter, with the real create_agent and
LangGraph's interrupt (a scripted chat model stands in for the LLM)
against a real gavel server."""

from __future__ import annotations

import uuid

from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command
from test_client import cli

from gavel_client import Gavel, guard
from gavel_client.adapters.langchain import GavelMiddleware


class ScriptedChat(GenericFakeChatModel):
    """Answers with the scripted messages in order; tools are bound by the agent."""

    def bind_tools(self, tools, **kwargs):
        return self


def call(name, args):
    return {"name": name, "args": args, "id": f"tc-{uuid.uuid4().hex[:10]}", "type": "tool_call"}


def test_calls_are_decided_paused_for_approval_and_run_bound(server):
    agent_client = Gavel(server["addr"], server["tokens"]["dev-agent"])
    executor = Gavel(server["addr"], server["tokens"]["dev-executor"])
    ran = []

    @tool
    def pay(invoice: str, amount_usd: int) -> str:
        """Pay an invoice."""
        ran.append(("pay", invoice, amount_usd))
        return "paid"

    @tool
    def read_file(path: str) -> str:
        """Read a file."""
        ran.append(("read", path))
        return "fn main() {}"

    @tool
    def drop_table(table: str) -> str:
        """Drop a table."""
        ran.append(("drop", table))
        return "dropped"

    @tool
    def shell(command: str) -> str:
        """Run a shell command."""
        ran.append(("shell", command))
        return ""

    middleware = GavelMiddleware(
        {
            "pay": guard(agent_client, executor, topic="job.finance.pay", action="pay", target="vendor-acme", risk_tags=["payment"], timeout=60),
            "read_file": guard(agent_client, executor, topic="job.repo.read", action="read"),
            "drop_table": guard(agent_client, executor, topic="job.db.write", action="delete", target="production_users", risk_tags=["prod", "write"]),
        }
    )
    calls = [
        call("read_file", {"path": "src/lib.rs"}),
        call("drop_table", {"table": "users"}),
        call("shell", {"command": "rm -rf /"}),
        call("pay", {"invoice": "INV-5", "amount_usd": 700}),
    ]
    model = ScriptedChat(messages=iter([AIMessage(content="", tool_calls=calls), AIMessage(content="done")]))
    graph = create_agent(model, tools=[pay, read_file, drop_table, shell], middleware=[middleware], checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": uuid.uuid4().hex}}

    out = graph.invoke({"messages": [{"role": "user", "content": "tidy up and pay INV-5"}]}, config)
    pending = [i.value for i in out["__interrupt__"]]
    pay_job = middleware.job_id(calls[3]["id"])
    assert [p["gavel_job_id"] for p in pending] == [pay_job]
    assert pending[0]["args"] == {"invoice": "INV-5", "amount_usd": 700}
    assert ("pay", "INV-5", 700) not in ran

    cli(server, "alice", "approve", pay_job, "--reason", "invoice matches")
    cli(server, "bob", "approve", pay_job, "--reason", "amount checked")
    assert agent_client.wait(pay_job, timeout=60).state == "approved"
    out = graph.invoke(Command(resume=True), config)

    assert out["messages"][-1].content == "done"
    assert ran.count(("read", "src/lib.rs")) == 1
    assert ran.count(("pay", "INV-5", 700)) == 1
    assert not any(r[0] in ("drop", "shell") for r in ran)
    results = {m.tool_call_id: m for m in out["messages"] if isinstance(m, ToolMessage)}
    assert results[calls[0]["id"]].content == "fn main() {}"
    assert results[calls[1]["id"]].status == "error" and "(DENIED)" in results[calls[1]["id"]].content
    assert results[calls[2]["id"]].status == "error" and "no guard is configured" in results[calls[2]["id"]].content
    assert results[calls[3]["id"]].content == "paid"
    assert agent_client.state(pay_job) == "succeeded"
    assert agent_client.state(middleware.job_id(calls[0]["id"])) == "succeeded"


def test_a_rejected_call_is_answered_with_an_error_and_never_runs(server):
    agent_client = Gavel(server["addr"], server["tokens"]["dev-agent"])
    executor = Gavel(server["addr"], server["tokens"]["dev-executor"])
    ran = []

    @tool
    def pay(invoice: str) -> str:
        """Pay."""
        ran.append(invoice)
        return "paid"

    middleware = GavelMiddleware({"pay": guard(agent_client, executor, topic="job.finance.pay", action="pay", risk_tags=["payment"], timeout=60)})
    c = call("pay", {"invoice": "INV-6"})
    model = ScriptedChat(messages=iter([AIMessage(content="", tool_calls=[c]), AIMessage(content="ok")]))
    graph = create_agent(model, tools=[pay], middleware=[middleware], checkpointer=InMemorySaver())
    config = {"configurable": {"thread_id": uuid.uuid4().hex}}
    out = graph.invoke({"messages": [{"role": "user", "content": "pay"}]}, config)
    assert out["__interrupt__"]
    cli(server, "carol", "reject", middleware.job_id(c["id"]), "--reason", "duplicate invoice")
    out = graph.invoke(Command(resume=True), config)
    message = next(m for m in out["messages"] if isinstance(m, ToolMessage))
    assert message.status == "error" and "(REJECTED)" in message.content
    assert ran == []
