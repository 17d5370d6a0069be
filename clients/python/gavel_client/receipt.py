"""Bind receipts: compact JWS (EdDSA over Ed25519) signed by the server's
receipt key, checked here against its JWKS (``gavel keys`` or
``GET /api/v1/keys``)."""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

from gavel_client import _ed25519
from gavel_client.errors import GavelError


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _invalid(message: str) -> GavelError:
    return GavelError("RECEIPT_INVALID", message)


def load_jwks(source: Any) -> dict:
    """A JWKS from a dict, a file path, or an ``http(s)://`` URL (fetched once)."""
    if isinstance(source, dict):
        jwks = source
    elif isinstance(source, str) and source.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(source, timeout=10) as r:  # noqa: S310 - http(s) only
                jwks = json.loads(r.read(1024 * 1024))
        except (OSError, ValueError) as e:
            raise GavelError("UNAVAILABLE", f"cannot fetch the JWKS from {source}: {e}") from None
    else:
        try:
            jwks = json.loads(Path(source).read_text())
        except (OSError, ValueError) as e:
            raise GavelError("INVALID_ARGUMENT", f"cannot read the JWKS file {source}: {e}") from None
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise GavelError("INVALID_ARGUMENT", "a JWKS is an object with a `keys` list")
    return jwks


def verify_receipt(receipt: str, jwks: dict, now: float | None = None) -> dict:
    """The receipt's payload when its signature verifies against a key of
    ``jwks`` and it has not expired; :class:`GavelError` ``RECEIPT_INVALID``
    otherwise."""
    parts = receipt.strip().split(".")
    if len(parts) != 3:
        raise _invalid("not a compact JWS (three dot-separated parts)")
    try:
        header = json.loads(_b64(parts[0]))
        payload = json.loads(_b64(parts[1]))
        signature = _b64(parts[2])
    except ValueError:
        raise _invalid("a part is not base64url JSON") from None
    if not isinstance(header, dict) or header.get("alg") != "EdDSA":
        raise _invalid("alg must be EdDSA")
    key = next((k for k in jwks["keys"] if isinstance(k, dict) and k.get("kid") == header.get("kid")), None)
    if key is None:
        raise _invalid(f"no key `{header.get('kid')}` in the JWKS")
    if key.get("kty") != "OKP" or key.get("crv") != "Ed25519":
        raise _invalid("the key is not an Ed25519 key")
    try:
        public = _b64(key.get("x") or "")
    except ValueError:
        raise _invalid("the key's x is not base64url") from None
    if not _ed25519.verify(public, f"{parts[0]}.{parts[1]}".encode(), signature):
        raise _invalid("the signature does not verify: the receipt was altered or signed by another key")
    if not isinstance(payload, dict):
        raise _invalid("the payload is not an object")
    exp = payload.get("exp")
    if not isinstance(exp, (int, float)) or exp < (time.time() if now is None else now):
        raise _invalid(f"the receipt has expired (exp {exp})")
    return payload
