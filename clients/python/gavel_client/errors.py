"""The one exception a refusal raises, and its subclass for waiting too long."""

from __future__ import annotations


class GavelError(Exception):
    """A refusal, with gavel's machine-readable reason (e.g. ``HASH_MISMATCH``).

    Refusals decoded from the server's error details carry the server's
    reason; the client adds its own for what it checks itself:
    ``RECEIPT_INVALID`` (a bind receipt that does not verify or does not
    match the binding), ``DENIED`` (guard: the policy said no),
    ``PENDING`` (a wait that ran out of time) and ``REJECTED``/``EXPIRED``/
    ``CANCELLED`` (guard: the job will not run). Transport failures carry
    the gRPC code (``UNAVAILABLE``, ``DEADLINE_EXCEEDED``).
    """

    def __init__(self, reason: str, message: str, field: str = "", code: str = ""):
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.field = field
        self.code = code


class WaitTimeout(GavelError):
    """The job was still pending when the deadline passed: do not run it."""
