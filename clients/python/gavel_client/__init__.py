"""gavel-client: decide, wait for approval, bind and report from Python.

    from gavel_client import Gavel
    g = Gavel("127.0.0.1:50051", token)
    d = g.decide(job)
"""

from gavel_client._jcs import canonical, canonical_job, job_hash
from gavel_client.client import Bound, Decision, Gavel, GavelError, WaitTimeout, job_message
from gavel_client.guard import guard

__all__ = [
    "Bound",
    "Decision",
    "Gavel",
    "GavelError",
    "WaitTimeout",
    "canonical",
    "guard",
    "canonical_job",
    "job_hash",
    "job_message",
]
