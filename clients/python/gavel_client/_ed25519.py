"""Ed25519 signature verification (RFC 8032, section 5.1.7) in plain Python,
so checking a bind receipt needs no dependency beyond the standard library.

Only verification is here: it handles public data, so it does not need to be
constant-time. Points are kept in extended twisted Edwards coordinates
(X, Y, Z, T) with x = X/Z, y = Y/Z and x*y = T/Z.
"""

from __future__ import annotations

import hashlib

_P = 2**255 - 19
_L = 2**252 + 27742317777372353535851937790883648493
_D = (-121665 * pow(121666, _P - 2, _P)) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)
_IDENTITY = (0, 1, 1, 0)


def _inv(x: int) -> int:
    return pow(x, _P - 2, _P)


def _x_from_y(y: int, odd: int) -> int | None:
    """The x with the given parity on the curve at y, if there is one."""
    if y >= _P:
        return None
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    xx = u * _inv(v) % _P
    if xx == 0:
        return None if odd else 0
    x = pow(xx, (_P + 3) // 8, _P)
    if (x * x - xx) % _P != 0:
        x = x * _SQRT_M1 % _P
    if (x * x - xx) % _P != 0:
        return None
    if x & 1 != odd:
        x = _P - x
    return x


def _decode(encoded: bytes):
    if len(encoded) != 32:
        return None
    n = int.from_bytes(encoded, "little")
    odd, y = n >> 255, n & ((1 << 255) - 1)
    x = _x_from_y(y, odd)
    if x is None:
        return None
    return (x, y, 1, x * y % _P)


def _add(p, q):
    x1, y1, z1, t1 = p
    x2, y2, z2, t2 = q
    a = (y1 - x1) * (y2 - x2) % _P
    b = (y1 + x1) * (y2 + x2) % _P
    c = 2 * _D * t1 * t2 % _P
    d = 2 * z1 * z2 % _P
    e, f, g, h = b - a, d - c, d + c, b + a
    return (e * f % _P, g * h % _P, f * g % _P, e * h % _P)


def _times(n: int, p):
    acc = _IDENTITY
    while n:
        if n & 1:
            acc = _add(acc, p)
        p = _add(p, p)
        n >>= 1
    return acc


def _same(p, q) -> bool:
    x1, y1, z1, _ = p
    x2, y2, z2, _ = q
    return (x1 * z2 - x2 * z1) % _P == 0 and (y1 * z2 - y2 * z1) % _P == 0


_BY = 4 * _inv(5) % _P
_BASE = (_x_from_y(_BY, 0), _BY, 1, _x_from_y(_BY, 0) * _BY % _P)


def verify(public_key: bytes, message: bytes, signature: bytes) -> bool:
    """True when ``signature`` is a valid Ed25519 signature of ``message``
    by ``public_key`` (32 bytes)."""
    if len(public_key) != 32 or len(signature) != 64:
        return False
    a = _decode(public_key)
    r = _decode(signature[:32])
    if a is None or r is None:
        return False
    s = int.from_bytes(signature[32:], "little")
    if s >= _L:
        return False
    k = int.from_bytes(hashlib.sha512(signature[:32] + public_key + message).digest(), "little") % _L
    return _same(_times(s, _BASE), _add(r, _times(k, a)))
