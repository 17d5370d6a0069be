"""RFC 8785 (JCS) canonical JSON and gavel's job hash, written here so a
client can check the hash it is bound to without trusting the server."""

from __future__ import annotations

import hashlib
import math
from typing import Any

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _string(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _number(x: float | int) -> str:
    """ECMAScript's Number::toString for a double, as RFC 8785 requires."""
    if isinstance(x, bool):
        raise TypeError("bool is not a number")
    f = float(x)
    if isinstance(x, int) and abs(x) > 2**53 and _number(f) != str(x):
        # As the server: an integer beyond 2**53 only in the exact form the
        # canonical writer gives a double (6629298664374272000 is one).
        raise ValueError(f"integer {x} cannot be represented exactly as a double")
    if math.isnan(f) or math.isinf(f):
        raise ValueError("NaN and infinities have no JSON form")
    if f == 0:
        return "0"
    sign = "-" if f < 0 else ""
    # repr gives the shortest digits that round-trip; re-lay them out the
    # way ECMAScript does.
    r = repr(abs(f))
    if "e" in r:
        mant, exp = r.split("e")
        exp_i = int(exp)
    else:
        mant, exp_i = r, 0
    if "." in mant:
        whole, frac = mant.split(".")
    else:
        whole, frac = mant, ""
    digits = (whole + frac).lstrip("0")
    # n: position of the decimal point relative to the digits (ECMAScript's n)
    lead_zeros = len(whole + frac) - len((whole + frac).lstrip("0"))
    n = len(whole) + exp_i - lead_zeros
    digits = digits.rstrip("0") or "0"
    k = len(digits)
    if k <= n <= 21:
        s = digits + "0" * (n - k)
    elif 0 < n <= 21:
        s = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        s = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        es = f"+{e}" if e >= 0 else f"{e}"
        s = digits[0] + ("." + digits[1:] if k > 1 else "") + "e" + es
    return sign + s


def _utf16_key(k: str) -> list[int]:
    return list(k.encode("utf-16-be"))


def canonical(value: Any) -> str:
    """The RFC 8785 serialisation of a JSON value."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, (int, float)):
        return _number(value)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: _utf16_key(kv[0]))
        return "{" + ",".join(_string(k) + ":" + canonical(v) for k, v in items) + "}"
    raise TypeError(f"{type(value).__name__} is not JSON")


def canonical_job(job: dict) -> dict:
    """The document gavel hashes: every key present, risk tags a sorted set."""
    proposal = job.get("proposal")
    if proposal:
        proposal = {
            "title": proposal.get("title") or "",
            "why": proposal.get("why") or "",
            "blast_radius": proposal.get("blast_radius") or "",
            "reversible": proposal.get("reversible"),
            "estimated_cost_usd": proposal.get("estimated_cost_usd"),
        }
        empty = (
            not proposal["title"]
            and not proposal["why"]
            and not proposal["blast_radius"]
            and proposal["reversible"] is None
            and proposal["estimated_cost_usd"] is None
        )
        if empty:
            proposal = None
    else:
        proposal = None
    return {
        "tenant": job.get("tenant") or "",
        "topic": job.get("topic") or "",
        "action": job.get("action") or "",
        "target": job.get("target") or "",
        "risk_tags": sorted(set(job.get("risk_tags") or []), key=lambda t: t.encode("utf-16-be")),
        "attributes": dict(job.get("attributes") or {}),
        "params": dict(job.get("params") or {}),
        "proposal": proposal,
    }


def job_hash(job: dict) -> str:
    """Lowercase hex sha256 of the job's canonical JSON (SPEC §3)."""
    return hashlib.sha256(canonical(canonical_job(job)).encode("utf-8")).hexdigest()
