"""The synchronous client: Decide, wait for approval, Bind, report."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from gavel_client._proto.gavel.v1 import gavel_pb2 as pb
from gavel_client._proto.gavel.v1 import gavel_pb2_grpc as rpc
from gavel_client._proto.google.rpc import status_pb2


class GavelError(Exception):
    """A refusal, with gavel's machine-readable reason (e.g. ``HASH_MISMATCH``)."""

    def __init__(self, reason: str, message: str, field: str = "", code: str = ""):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.field = field
        self.code = code


class WaitTimeout(GavelError):
    """The job was still pending when the deadline passed: do not run it."""


def _error(e: grpc.RpcError) -> GavelError:
    code = e.code().name if e.code() else "UNKNOWN"
    for key, value in e.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            for d in status.details:
                detail = pb.ErrorDetail()
                if d.Unpack(detail):
                    name = pb.Reason.Name(detail.reason).removeprefix("REASON_")
                    return GavelError(name, e.details() or "", detail.field, code)
    # No detail: the transport failed (unreachable, deadline, …).
    return GavelError(code, e.details() or str(e), "", code)


def _enum(enum, value: int, prefix: str) -> str:
    return enum.Name(value).removeprefix(prefix).lower()


@dataclass
class Decision:
    job_id: str
    decision: str  # allow, allow_with_constraints, require_approval, deny
    state: str  # pending, allowed, approved, …
    policy_snapshot: str
    job_hash: str
    primary_rule: str = ""
    reason: str = ""
    approval_required: bool = False
    constraints: dict = field(default_factory=dict)
    replayed: bool = False


@dataclass
class Bound:
    bind_id: str
    job_id: str
    job_hash: str
    policy_snapshot: str
    canonical_job: str
    receipt: str
    constraints: dict = field(default_factory=dict)
    approvers: list = field(default_factory=list)

    @property
    def job(self) -> dict:
        """The job as decided and approved: run this, not your own copy."""
        return json.loads(self.canonical_job)

    @property
    def params(self) -> dict:
        return self.job["params"]


def job_message(job: dict) -> pb.Job:
    """A job dict (the job file form) as the wire message."""
    allowed = {"job_id", "tenant", "topic", "action", "target", "risk_tags", "attributes", "params", "proposal"}
    unknown = set(job) - allowed
    if unknown:
        raise GavelError("INVALID_ARGUMENT", f"unknown job fields: {sorted(unknown)}", sorted(unknown)[0])
    m = pb.Job(
        job_id=job.get("job_id") or "",
        tenant=job.get("tenant") or "",
        topic=job.get("topic") or "",
        action=job.get("action") or "",
        target=job.get("target") or "",
        risk_tags=list(job.get("risk_tags") or []),
    )
    for k, v in (job.get("attributes") or {}).items():
        m.attributes[k].CopyFrom(json_format.ParseDict(v, struct_pb2.Value()))
    m.params.update(job.get("params") or {})
    p = job.get("proposal")
    if p:
        m.proposal.title = p.get("title") or ""
        m.proposal.why = p.get("why") or ""
        m.proposal.blast_radius = p.get("blast_radius") or ""
        if p.get("reversible") is not None:
            m.proposal.reversible = bool(p["reversible"])
        if p.get("estimated_cost_usd") is not None:
            m.proposal.estimated_cost_usd = float(p["estimated_cost_usd"])
    return m


class Gavel:
    """A connection to a gavel server as one identity (its bearer token)."""

    def __init__(self, server: str = "127.0.0.1:50051", token: str = "", timeout: float = 10.0):
        target = server.removeprefix("http://")
        self._channel = grpc.insecure_channel(target)
        self._meta = (("authorization", f"Bearer {token}"),)
        self._timeout = timeout
        self._decisions = rpc.DecisionServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Gavel":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, method, request, timeout: float | None = None):
        try:
            return method(request, metadata=self._meta, timeout=timeout or self._timeout)
        except grpc.RpcError as e:
            raise _error(e) from None

    def decide(self, job: dict) -> Decision:
        r = self._call(self._decisions.Decide, pb.DecideRequest(job=job_message(job)))
        return Decision(
            job_id=r.job_id,
            decision=_enum(pb.Decision, r.decision, "DECISION_"),
            state=_enum(pb.JobState, r.state, "JOB_STATE_"),
            policy_snapshot=r.policy_snapshot,
            job_hash=r.job_hash,
            primary_rule=r.primary_rule,
            reason=r.reason,
            approval_required=r.approval_required,
            constraints=json_format.MessageToDict(r.constraints),
            replayed=r.replayed,
        )

    def state(self, job_id: str) -> str:
        r = self._call(self._decisions.GetJob, pb.GetJobRequest(job_id=job_id))
        return _enum(pb.JobState, r.job.state, "JOB_STATE_")

    def wait(self, job_id: str, timeout: float) -> str:
        """Waits until the job is no longer pending and returns its state;
        raises :class:`WaitTimeout` at the deadline. A dropped stream is
        resumed; the job's state is re-read each time."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.state(job_id)
            if state != "pending":
                return state
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout("PENDING", f"job {job_id} is still waiting for approval", "", "DEADLINE_EXCEEDED")
            try:
                stream = self._decisions.WatchJob(
                    pb.WatchJobRequest(job_id=job_id), metadata=self._meta, timeout=left
                )
                for event in stream:
                    s = _enum(pb.JobState, event.job.state, "JOB_STATE_")
                    if s != "pending":
                        return s
            except grpc.RpcError as e:
                err = _error(e)
                if err.code not in ("DEADLINE_EXCEEDED", "UNAVAILABLE", "CANCELLED"):
                    raise err from None
                # Deadline or a dropped stream: loop, re-read, resume.

    def bind(self, job_id: str, job: dict, snapshot: str) -> Bound:
        r = self._call(
            self._decisions.Bind,
            pb.BindRequest(job_id=job_id, job=job_message(job), policy_snapshot=snapshot),
        )
        return Bound(
            bind_id=r.bind_id,
            job_id=r.job_id,
            job_hash=r.job_hash,
            policy_snapshot=r.policy_snapshot,
            canonical_job=r.canonical_job,
            receipt=r.receipt,
            constraints=json_format.MessageToDict(r.constraints),
            approvers=[a.approver for a in r.approvals],
        )

    def report(self, job_id: str, bind_id: str, ok: bool, detail: str = "") -> str:
        outcome = pb.OUTCOME_SUCCEEDED if ok else pb.OUTCOME_FAILED
        r = self._call(
            self._decisions.ReportOutcome,
            pb.ReportOutcomeRequest(job_id=job_id, bind_id=bind_id, outcome=outcome, detail=detail),
        )
        return _enum(pb.JobState, r.job.state, "JOB_STATE_")
