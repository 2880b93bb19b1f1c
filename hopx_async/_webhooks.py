"""Webhook signatures: the one signing function shared by the local backend and receivers.

No I/O. A callback of ``/execute/async`` carries two headers::

    X-HOPX-Timestamp: 1764139200
    X-HOPX-Signature: sha256=<hex HMAC-SHA256>

The HMAC key is the ``callback_signature_secret`` (UTF-8), and the signed message is the
timestamp's decimal digits immediately followed by the raw request body, byte for byte, with
no separator (as the HopX documentation signs it)::

    f"{timestamp}".encode() + body

A receiver checks it with :func:`verify_webhook` on the body exactly as received (before
parsing the JSON).
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

from ._errors import HopxError

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "WebhookVerificationError",
    "sign_webhook",
    "verify_webhook",
]

SIGNATURE_HEADER = "X-HOPX-Signature"
TIMESTAMP_HEADER = "X-HOPX-Timestamp"
_PREFIX = "sha256="


class WebhookVerificationError(HopxError):
    """A webhook's signature is missing, malformed, wrong or too old."""


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def sign_webhook(secret: str | bytes, timestamp: int, body: bytes) -> str:
    """The ``X-HOPX-Signature`` value for ``body`` sent at ``timestamp`` (unix seconds).

    >>> sign_webhook("s3cret", 1700000000, b'{"status":"completed"}')[:7]
    'sha256='
    """
    message = str(int(timestamp)).encode() + body
    return _PREFIX + hmac.new(_as_bytes(secret), message, hashlib.sha256).hexdigest()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, found in headers.items():  # a plain dict is not case-insensitive
        if key.lower() == wanted:
            return found
    return None


def verify_webhook(
    secret: str | bytes,
    headers: Mapping[str, str],
    body: str | bytes,
    *,
    tolerance: float = 300,
    now: float | None = None,
) -> None:
    """Check a webhook's signature; raise :class:`WebhookVerificationError` if it is bad.

    ``headers`` are the request's headers (any mapping; names are matched without regard to
    case), ``body`` the raw body as received. A timestamp more than ``tolerance`` seconds
    away from ``now`` (default: the current time) is refused as stale, so a captured request
    cannot be replayed later.

    >>> from aiohttp import web  # doctest: +SKIP
    >>> async def receive(request: web.Request) -> web.Response:  # doctest: +SKIP
    ...     body = await request.read()
    ...     verify_webhook(SECRET, request.headers, body)  # raises if forged or stale
    ...     print(json.loads(body)["status"])
    ...     return web.Response()
    """
    signature = _header(headers, SIGNATURE_HEADER)
    stamp = _header(headers, TIMESTAMP_HEADER)
    if signature is None or stamp is None:
        missing = SIGNATURE_HEADER if signature is None else TIMESTAMP_HEADER
        raise WebhookVerificationError(f"the {missing} header is missing")
    stamp = stamp.strip()
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
        raise WebhookVerificationError(f"the {TIMESTAMP_HEADER} header is not unix seconds")
    timestamp = int(stamp)
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance:
        raise WebhookVerificationError(
            f"the webhook's timestamp is {abs(current - timestamp):.0f} s away from now "
            f"(tolerance {tolerance:g} s): stale or replayed"
        )
    if not signature.startswith(_PREFIX):
        raise WebhookVerificationError(f"the {SIGNATURE_HEADER} header must start with sha256=")
    expected = sign_webhook(secret, timestamp, _as_bytes(body))
    if not hmac.compare_digest(expected.encode(), signature.strip().encode()):
        raise WebhookVerificationError("the webhook's signature does not match its body")
