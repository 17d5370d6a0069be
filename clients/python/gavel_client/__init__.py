"""gavel-client: decide, wait for approval, bind and report from Python.

    from gavel_client import Gavel, guard
    agent = Gavel("127.0.0.1:50051", token)
    d = agent.decide(job)
"""

from gavel_client._jcs import canonical, canonical_job, job_hash
from gavel_client.aio import AsyncGavel
from gavel_client.client import Bound, Decision, Gavel, job_message
from gavel_client.errors import GavelError, WaitTimeout
from gavel_client.guard import guard
from gavel_client.receipt import load_jwks, verify_receipt

__all__ = [
    "AsyncGavel",
    "Bound",
    "Decision",
    "Gavel",
    "GavelError",
    "WaitTimeout",
    "canonical",
    "canonical_job",
    "guard",
    "job_hash",
    "job_message",
    "load_jwks",
    "verify_receipt",
]
