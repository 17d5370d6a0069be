"""``guard``: run a tool only as gavel decided, approved and bound it.

    @guard(agent, executor, topic="job.db.write", action="update", target="orders")
    def update_orders(sql: str, rows: int) -> int: ...

The decorated function is called with keyword arguments. Each call decides
on those **final** arguments (they are the job's params), waits for approval
when the policy asks for it (raising :class:`WaitTimeout` at the deadline),
binds, runs the function with the **params Bind returned** (the canonical
bytes that were approved, never the caller's copy), and reports the outcome.
A deny, a rejection, an expiry or any refusal raises :class:`GavelError` and
the function does not run. ``max_runtime_sec`` in the decision's
constraints bounds the run: past it the outcome is reported failed and
:class:`TimeoutError` is raised (a thread cannot be stopped from outside, so
a sync tool should be cooperative; an async tool is cancelled). Pass
``job_id`` to make a retried call resume the same decision instead of asking
again; a job already bound is never run a second time.

``async def`` tools are guarded the same way with :class:`AsyncGavel`
clients.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hashlib
import inspect
import uuid
from contextlib import asynccontextmanager, contextmanager
from typing import Any, AsyncIterator, Callable, Iterator

from gavel_client.client import Bound, Decision
from gavel_client.errors import GavelError

RUNNABLE = ("allowed", "approved")


def refuse_unless_runnable(d: Decision) -> None:
    """Raises for a decision or state under which the job must not run."""
    if d.decision == "deny":
        raise GavelError("DENIED", f"{d.primary_rule}: {d.reason}", "", "PERMISSION_DENIED")
    if d.state == "pending":
        return
    if d.state in ("bound", "succeeded", "failed"):
        raise GavelError("ALREADY_BOUND", f"job {d.job_id} was already bound ({d.state}); it does not run twice", "", "FAILED_PRECONDITION")
    if d.state not in RUNNABLE:
        raise GavelError(d.state.upper(), f"job {d.job_id} is {d.state}; it will not run", "", "FAILED_PRECONDITION")


def _refuse_unless_bindable(d: Decision) -> None:
    refuse_unless_runnable(d)
    if d.state == "pending":
        raise GavelError("PENDING", f"job {d.job_id} is still waiting for approval", "", "FAILED_PRECONDITION")


def job_id_for(prefix: str, call_id: str) -> str:
    """A gavel job id for a framework's tool call id: ``<prefix>-<call id>``
    when that is a valid job id, else ``<prefix>-<sha256 of it>``."""
    candidate = f"{prefix}-{call_id}"
    if call_id and len(candidate) <= 128 and all(c.isascii() and (c.isalnum() or c in "._:-") for c in candidate):
        return candidate
    return f"{prefix}-{hashlib.sha256(call_id.encode()).hexdigest()[:40]}"


def _failure(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}"[:1000]


class guard:  # noqa: N801 - used as a decorator, like functools.wraps
    def __init__(
        self,
        agent,
        executor=None,
        *,
        topic: str,
        action: str,
        target: str = "",
        risk_tags: list[str] | None = None,
        attributes: dict | None = None,
        tenant: str = "",
        proposal: dict | None = None,
        timeout: float = 600.0,
    ):
        self.agent = agent
        self.executor = executor or agent
        self.template = {
            "tenant": tenant,
            "topic": topic,
            "action": action,
            "target": target,
            "risk_tags": list(risk_tags or []),
            "attributes": dict(attributes or {}),
            "proposal": proposal,
        }
        self.timeout = timeout

    def job(self, params: dict, job_id: str | None = None) -> dict:
        j = {k: v for k, v in self.template.items() if v not in (None, "", [], {})}
        j["job_id"] = job_id or f"guard-{uuid.uuid4()}"
        j["params"] = params
        return j

    # ------------------------------------------------------------------
    # Pieces for framework adapters, where deciding, waiting and running
    # happen at different moments of the framework's own loop.

    def decided(self, params: dict, job_id: str) -> Decision:
        """The decision for this call: the stored one when ``job_id`` was
        decided before (with these params), else a new one."""
        return self.agent.decide(self.job(params, job_id))

    def bind_approved(self, params: dict, job_id: str, decision: Decision | None = None) -> Bound:
        """Binds an allowed or approved job with exactly ``params``: changed
        params are refused with ``HASH_MISMATCH``, a job still waiting with
        ``PENDING``, every other state with its reason. ``decision``: the job
        as just read, to save reading it again."""
        d = decision or self.agent.get(job_id)
        _refuse_unless_bindable(d)
        return self.executor.bind(job_id, self.job(params, job_id), d.policy_snapshot)

    def run_bound(self, bound: Bound, fn: Callable[..., Any], *args: Any) -> Any:
        """Runs ``fn(*args, **bound.params)`` and reports the outcome."""
        try:
            result = fn(*args, **bound.params)
        except BaseException as e:
            self.executor.report(bound.job_id, bound.bind_id, False, _failure(e))
            raise
        self.executor.report(bound.job_id, bound.bind_id, True)
        return result

    async def adecided(self, params: dict, job_id: str) -> Decision:
        """:meth:`decided` for :class:`AsyncGavel` clients."""
        return await self.agent.decide(self.job(params, job_id))

    async def abind_approved(self, params: dict, job_id: str, decision: Decision | None = None) -> Bound:
        """:meth:`bind_approved` for :class:`AsyncGavel` clients."""
        d = decision or await self.agent.get(job_id)
        _refuse_unless_bindable(d)
        return await self.executor.bind(job_id, self.job(params, job_id), d.policy_snapshot)

    async def arun_bound(self, bound: Bound, fn: Callable[..., Any], *args: Any) -> Any:
        """Awaits ``fn(*args, **bound.params)`` (sync or async) and reports the outcome."""
        try:
            result = fn(*args, **bound.params)
            if inspect.isawaitable(result):
                result = await result
        except BaseException as e:
            await self.executor.report(bound.job_id, bound.bind_id, False, _failure(e))
            raise
        await self.executor.report(bound.job_id, bound.bind_id, True)
        return result

    @contextmanager
    def call(self, params: dict, job_id: str | None = None) -> Iterator[Bound]:
        """Decide, wait, bind; yields the binding to run with ``bound.params``;
        reports success when the block ends, or failure with the exception."""
        job = self.job(params, job_id)
        d = self.agent.decide(job)
        refuse_unless_runnable(d)
        if d.state == "pending":
            d = self.agent.wait(d.job_id, self.timeout)
            refuse_unless_runnable(d)
        bound = self.executor.bind(d.job_id, job, d.policy_snapshot)
        try:
            yield bound
        except BaseException as e:
            self.executor.report(d.job_id, bound.bind_id, False, _failure(e))
            raise
        self.executor.report(d.job_id, bound.bind_id, True)

    @asynccontextmanager
    async def acall(self, params: dict, job_id: str | None = None) -> AsyncIterator[Bound]:
        """:meth:`call` for :class:`AsyncGavel` clients."""
        job = self.job(params, job_id)
        d = await self.agent.decide(job)
        refuse_unless_runnable(d)
        if d.state == "pending":
            d = await self.agent.wait(d.job_id, self.timeout)
            refuse_unless_runnable(d)
        bound = await self.executor.bind(d.job_id, job, d.policy_snapshot)
        try:
            yield bound
        except BaseException as e:
            await self.executor.report(d.job_id, bound.bind_id, False, _failure(e))
            raise
        await self.executor.report(d.job_id, bound.bind_id, True)

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def awrapper(*args: Any, gavel_job_id: str | None = None, **kwargs: Any) -> Any:
                if args:
                    raise TypeError("guarded tools take keyword arguments only: they become the job's params")
                async with self.acall(kwargs, gavel_job_id) as bound:
                    limit = bound.constraints.get("max_runtime_sec")
                    if limit is None:
                        return await fn(**bound.params)
                    try:
                        return await asyncio.wait_for(fn(**bound.params), timeout=float(limit))
                    except asyncio.TimeoutError:
                        raise TimeoutError(f"the tool ran past max_runtime_sec={limit}") from None

            return awrapper

        @functools.wraps(fn)
        def wrapper(*args: Any, gavel_job_id: str | None = None, **kwargs: Any) -> Any:
            if args:
                raise TypeError("guarded tools take keyword arguments only: they become the job's params")
            with self.call(kwargs, gavel_job_id) as bound:
                limit = bound.constraints.get("max_runtime_sec")
                if limit is None:
                    return fn(**bound.params)
                pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
                try:
                    future = pool.submit(fn, **bound.params)
                    try:
                        return future.result(timeout=float(limit))
                    except concurrent.futures.TimeoutError:
                        raise TimeoutError(f"the tool ran past max_runtime_sec={limit}") from None
                finally:
                    pool.shutdown(wait=False)

        return wrapper
