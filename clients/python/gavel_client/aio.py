"""The asyncio client: the same calls as :class:`gavel_client.Gavel`,
awaitable, on ``grpc.aio``."""

from __future__ import annotations

import asyncio
import json

import grpc

from gavel_client._proto.gavel.v1 import gavel_pb2 as pb
from gavel_client._proto.gavel.v1 import gavel_pb2_grpc as rpc
from gavel_client.client import (
    Bound,
    Decision,
    _enum,
    _error,
    _outcome,
    _RESUMABLE,
    _pending_too_long,
    checked_binding,
    decision_of,
    job_message,
    record_decision,
)
from gavel_client.errors import GavelError
from gavel_client.receipt import load_jwks


class AsyncGavel:
    """A connection to a gavel server as one identity, for asyncio code.
    Create it inside the event loop that uses it. ``jwks`` as for
    :class:`gavel_client.Gavel`: receipts are verified by default."""

    def __init__(self, server: str = "127.0.0.1:50051", token: str = "", timeout: float = 10.0, jwks=None):
        self._channel = grpc.aio.insecure_channel(server.removeprefix("http://"))
        self._meta = (("authorization", f"Bearer {token}"),)
        self._timeout = timeout
        self._decisions = rpc.DecisionServiceStub(self._channel)
        self._verify = jwks is not False
        self.jwks = None if jwks in (None, False) else load_jwks(jwks)

    async def receipt_keys(self) -> dict | None:
        """The JWKS receipts are checked against (fetched from the server
        the first time), or None when verification is off."""
        if self._verify and self.jwks is None:
            r = await self._call(self._decisions.GetReceiptKeys, pb.GetReceiptKeysRequest())
            self.jwks = load_jwks(json.loads(r.jwks))
        return self.jwks

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> "AsyncGavel":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _call(self, method, request):
        try:
            return await method(request, metadata=self._meta, timeout=self._timeout)
        except grpc.RpcError as e:
            raise _error(e) from None

    async def decide(self, job: dict) -> Decision:
        return decision_of(await self._call(self._decisions.Decide, pb.DecideRequest(job=job_message(job))))

    async def get(self, job_id: str) -> Decision:
        r = await self._call(self._decisions.GetJob, pb.GetJobRequest(job_id=job_id))
        return record_decision(r.job)

    async def state(self, job_id: str) -> str:
        return (await self.get(job_id)).state

    async def wait(self, job_id: str, timeout: float) -> Decision:
        """Waits until the job is no longer pending; :class:`WaitTimeout` at
        the deadline. A dropped stream or a server restart is waited out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise _pending_too_long(job_id)
            try:
                r = await self._decisions.GetJob(
                    pb.GetJobRequest(job_id=job_id), metadata=self._meta, timeout=left, wait_for_ready=True
                )
                if r.job.state != pb.JOB_STATE_PENDING:
                    return record_decision(r.job)
                stream = self._decisions.WatchJob(
                    pb.WatchJobRequest(job_id=job_id), metadata=self._meta, timeout=left, wait_for_ready=True
                )
                async for event in stream:
                    if event.job.state != pb.JOB_STATE_PENDING:
                        return record_decision(event.job)
            except grpc.RpcError as e:
                err = _error(e)
                if err.code not in _RESUMABLE:
                    raise err from None

    async def bind(self, job_id: str, job: dict, snapshot: str) -> Bound:
        r = await self._call(
            self._decisions.Bind,
            pb.BindRequest(job_id=job_id, job=job_message(job), policy_snapshot=snapshot),
        )
        try:
            return checked_binding(r, job_id, job, snapshot, await self.receipt_keys())
        except GavelError as e:
            # Bound, but not what was asked for or not provably signed: the
            # job is closed as failed, and nothing runs.
            try:
                await self.report(job_id, r.bind_id, False, f"the client refused the binding: {e.reason}: {e.message}"[:1000])
            except GavelError:
                pass
            raise

    async def report(self, job_id: str, bind_id: str, ok: bool, detail: str = "") -> str:
        r = await self._call(
            self._decisions.ReportOutcome,
            pb.ReportOutcomeRequest(job_id=job_id, bind_id=bind_id, outcome=_outcome(ok), detail=detail),
        )
        return _enum(pb.JobState, r.job.state, "JOB_STATE_")
