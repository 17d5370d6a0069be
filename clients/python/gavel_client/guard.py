"""``guard``: run a tool only as gavel decided, approved and bound it.

    @guard(agent, executor, topic="job.db.write", action="update", target="orders")
    def update_orders(sql: str, rows: int) -> int: ...

The decorated function is called with keyword arguments. Each call decides
on those **final** arguments (they are the job's params), waits for approval
when the policy asks for it (raising :class:`WaitTimeout` at the deadline),
binds, runs the function with the **params Bind returned** (the canonical
bytes that were approved, never the caller's copy), and reports the outcome.
A deny or any refusal raises :class:`GavelError` and the function does not
run. ``max_runtime_sec`` in the decision's constraints bounds the run: past
it the outcome is reported failed and :class:`TimeoutError` is raised (the
function's thread cannot be stopped from outside; make it cooperative).
Pass ``job_id`` to make a retried call resume the same decision instead of
asking again; a job already bound is never run a second time.
"""

from __future__ import annotations

import concurrent.futures
import functools
import uuid
from contextlib import contextmanager
from typing import Any, Callable, Iterator

from gavel_client.client import Bound, Gavel, GavelError


class guard:  # noqa: N801 - used as a decorator, like functools.wraps
    def __init__(
        self,
        agent: Gavel,
        executor: Gavel | None = None,
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

    @contextmanager
    def call(self, params: dict, job_id: str | None = None) -> Iterator[Bound]:
        """Decide, wait, bind; yields the binding to run with ``bound.params``;
        reports success when the block ends, or failure with the exception."""
        job = self.job(params, job_id)
        d = self.agent.decide(job)
        if d.decision == "deny":
            raise GavelError("DENIED", f"{d.primary_rule}: {d.reason}", "", "PERMISSION_DENIED")
        if d.state == "pending":
            self.agent.wait(d.job_id, self.timeout)
        bound = self.executor.bind(d.job_id, job, d.policy_snapshot)
        try:
            yield bound
        except BaseException as e:
            self.executor.report(d.job_id, bound.bind_id, False, f"{type(e).__name__}: {e}"[:1000])
            raise
        self.executor.report(d.job_id, bound.bind_id, True)

    def __call__(self, fn: Callable[..., Any]) -> Callable[..., Any]:
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
