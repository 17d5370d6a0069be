"""The synchronous client: Decide, wait for approval, Bind, report."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import json_format, struct_pb2

from gavel_client._proto.gavel.v1 import gavel_pb2 as pb
from gavel_client._proto.gavel.v1 import gavel_pb2_grpc as rpc
from gavel_client._jcs import job_hash as local_job_hash
from gavel_client._proto.google.rpc import status_pb2
from gavel_client.errors import GavelError, WaitTimeout
from gavel_client.receipt import load_jwks, verify_receipt


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
    # The verified receipt's payload, when the client has a JWKS.
    receipt_claims: dict | None = None

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


def _decision(m, job_id: str, replayed: bool) -> Decision:
    # DecideResponse and JobRecord name these fields alike.
    return Decision(
        job_id=job_id,
        decision=_enum(pb.Decision, m.decision, "DECISION_"),
        state=_enum(pb.JobState, m.state, "JOB_STATE_"),
        policy_snapshot=m.policy_snapshot,
        job_hash=m.job_hash,
        primary_rule=m.primary_rule,
        reason=m.reason,
        approval_required=m.approval_required,
        constraints=json_format.MessageToDict(m.constraints),
        replayed=replayed,
    )


def decision_of(r) -> Decision:
    """A DecideResponse as a :class:`Decision`."""
    return _decision(r, r.job_id, r.replayed)


def record_decision(rec) -> Decision:
    """A JobRecord (GetJob, WatchJob) as a :class:`Decision` in its current state."""
    return _decision(rec, rec.job.job_id, True)


def checked_binding(r, job_id: str, job: dict, snapshot: str, jwks: dict | None) -> Bound:
    """A BindResponse as a :class:`Bound`, after checking that it binds what
    was sent: the canonical bytes hash to the bound hash, which is the hash
    of ``job`` computed here; with a JWKS, the receipt's signature and its
    claims too. Anything off raises and nothing runs."""
    if hashlib.sha256(r.canonical_job.encode()).hexdigest() != r.job_hash:
        raise GavelError("HASH_MISMATCH", "the canonical job returned does not hash to the bound hash")
    mine = local_job_hash(job)
    if r.job_hash != mine:
        raise GavelError("HASH_MISMATCH", f"bound {r.job_hash}, but the job sent hashes to {mine}")
    if r.job_id != job_id or r.policy_snapshot != snapshot:
        raise GavelError("SNAPSHOT_MISMATCH", "the binding names another job or snapshot than was asked for")
    claims = None
    if jwks is not None:
        claims = verify_receipt(r.receipt, jwks)
        expected = {"job_id": r.job_id, "job_hash": r.job_hash, "policy_snapshot": r.policy_snapshot, "bind_id": r.bind_id}
        for key, want in expected.items():
            if claims.get(key) != want:
                raise GavelError("RECEIPT_INVALID", f"the receipt's {key} is {claims.get(key)!r}, not {want!r}")
    return Bound(
        bind_id=r.bind_id,
        job_id=r.job_id,
        job_hash=r.job_hash,
        policy_snapshot=r.policy_snapshot,
        canonical_job=r.canonical_job,
        receipt=r.receipt,
        constraints=json_format.MessageToDict(r.constraints),
        approvers=[a.approver for a in r.approvals],
        receipt_claims=claims,
    )


def _pending_too_long(job_id: str) -> WaitTimeout:
    return WaitTimeout("PENDING", f"job {job_id} is still waiting for approval", "", "DEADLINE_EXCEEDED")


# Codes after which wait() re-reads the job and resumes watching.
_RESUMABLE = ("DEADLINE_EXCEEDED", "UNAVAILABLE", "CANCELLED")


def _outcome(ok: bool):
    return pb.OUTCOME_SUCCEEDED if ok else pb.OUTCOME_FAILED


class Gavel:
    """A connection to a gavel server as one identity (its bearer token).

    ``jwks``: the keys every :meth:`bind` verifies the receipt's signature
    and claims against before returning. By default they are fetched once
    from the server (``GetReceiptKeys``); pin them with a dict, a file from
    ``gavel keys`` or the URL of ``/api/v1/keys``. ``jwks=False`` turns
    receipt verification off (the hash checks stay).
    """

    def __init__(self, server: str = "127.0.0.1:50051", token: str = "", timeout: float = 10.0, jwks=None):
        target = server.removeprefix("http://")
        self._channel = grpc.insecure_channel(target)
        self._meta = (("authorization", f"Bearer {token}"),)
        self._timeout = timeout
        self._decisions = rpc.DecisionServiceStub(self._channel)
        self._verify = jwks is not False
        self.jwks = None if jwks in (None, False) else load_jwks(jwks)

    def receipt_keys(self) -> dict | None:
        """The JWKS receipts are checked against (fetched from the server
        the first time), or None when verification is off."""
        if self._verify and self.jwks is None:
            r = self._call(self._decisions.GetReceiptKeys, pb.GetReceiptKeysRequest())
            self.jwks = load_jwks(json.loads(r.jwks))
        return self.jwks

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
        return decision_of(self._call(self._decisions.Decide, pb.DecideRequest(job=job_message(job))))

    def get(self, job_id: str) -> Decision:
        """The job's decision and current state."""
        r = self._call(self._decisions.GetJob, pb.GetJobRequest(job_id=job_id))
        return record_decision(r.job)

    def state(self, job_id: str) -> str:
        return self.get(job_id).state

    def wait(self, job_id: str, timeout: float) -> Decision:
        """Waits until the job is no longer pending and returns it in its new
        state; raises :class:`WaitTimeout` at the deadline. A dropped stream
        or a server restart is waited out (``wait_for_ready``) and the job
        re-read, until the deadline."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _pending_too_long(job_id)
            try:
                r = self._decisions.GetJob(
                    pb.GetJobRequest(job_id=job_id), metadata=self._meta, timeout=left, wait_for_ready=True
                )
                if r.job.state != pb.JOB_STATE_PENDING:
                    return record_decision(r.job)
                stream = self._decisions.WatchJob(
                    pb.WatchJobRequest(job_id=job_id), metadata=self._meta, timeout=left, wait_for_ready=True
                )
                for event in stream:
                    if event.job.state != pb.JOB_STATE_PENDING:
                        return record_decision(event.job)
            except grpc.RpcError as e:
                err = _error(e)
                if err.code not in _RESUMABLE:
                    raise err from None
                # The deadline, a dropped stream or a restarting server:
                # loop, re-read, resume.

    def bind(self, job_id: str, job: dict, snapshot: str) -> Bound:
        r = self._call(
            self._decisions.Bind,
            pb.BindRequest(job_id=job_id, job=job_message(job), policy_snapshot=snapshot),
        )
        try:
            return checked_binding(r, job_id, job, snapshot, self.receipt_keys())
        except GavelError as e:
            # Bound, but not what was asked for or not provably signed: the
            # job is closed as failed, and nothing runs.
            try:
                self.report(job_id, r.bind_id, False, f"the client refused the binding: {e.reason}: {e.message}"[:1000])
            except GavelError:
                pass
            raise

    def report(self, job_id: str, bind_id: str, ok: bool, detail: str = "") -> str:
        r = self._call(
            self._decisions.ReportOutcome,
            pb.ReportOutcomeRequest(job_id=job_id, bind_id=bind_id, outcome=_outcome(ok), detail=detail),
        )
        return _enum(pb.JobState, r.job.state, "JOB_STATE_")
