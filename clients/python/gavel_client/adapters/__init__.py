"""Adapters for agent frameworks. Each imports its framework only when
used, so gavel-client itself still depends on grpcio and protobuf alone.

- :mod:`gavel_client.adapters.openai_agents`: OpenAI Agents SDK
  (``needs_approval`` plus a tool input guardrail that binds).
- :mod:`gavel_client.adapters.langchain`: LangChain v1 agents (tool-call
  middleware; LangGraph ``interrupt()`` for the wait).
- :mod:`gavel_client.adapters.pydantic_ai`: Pydantic AI (``ApprovalRequired``
  and a deferred tool calls handler).
"""
