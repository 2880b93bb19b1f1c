"""Per-sandbox agent tokens: HMAC-signed, expiring, bound to one sandbox.

A token is ``hopx1.<payload>.<signature>`` where ``payload`` is the urlsafe-base64 JSON
``{"sid": sandbox_id, "exp": unix_seconds, "n": nonce}`` and ``signature`` the urlsafe-base64
HMAC-SHA256 of the payload under the server's secret (kept in the store, so tokens survive
a restart with the same state directory).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import secrets
import time

import attrs

__all__ = ["TokenError", "TokenSigner", "is_header_text"]

_PREFIX = "hopx1"
#: Past this many sandboxes, the remembered expiries of expired tokens are dropped.
_REMEMBERED = 4096


def is_header_text(value: str) -> bool:
    """Whether a credential header holds only printable ASCII (anything else never matches).

    >>> is_header_text("abc ~"), is_header_text("a\\tb"), is_header_text("é")
    (True, False, False)
    """
    return value.isascii() and value.isprintable()


class TokenError(Exception):
    """The token is malformed, badly signed or expired."""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@attrs.define(repr=False)
class TokenSigner:
    """Issues and checks sandbox tokens. Its repr never shows the secret."""

    secret: bytes
    ttl_seconds: float = 24 * 3600.0
    #: The last expiry issued per sandbox: a new token always expires strictly later.
    _last_expiry: dict[str, int] = attrs.field(factory=dict, init=False)

    def __repr__(self) -> str:
        return f"TokenSigner(ttl_seconds={self.ttl_seconds})"

    def issue(self, sandbox_id: str, *, now: float | None = None) -> tuple[str, float]:
        """Return ``(token, expires_at)`` for ``sandbox_id``, expiring strictly later than
        the previous token issued for it by this signer."""
        # rounded up: a token lives at least ttl_seconds
        expires_at = math.ceil((time.time() if now is None else now) + self.ttl_seconds)
        # Expiries are whole seconds; two issues within one second would otherwise tie.
        expires_at = max(expires_at, self._last_expiry.get(sandbox_id, 0) + 1)
        if len(self._last_expiry) >= _REMEMBERED and sandbox_id not in self._last_expiry:
            current = time.time() if now is None else now
            self._last_expiry = {k: v for k, v in self._last_expiry.items() if v > current}
        self._last_expiry[sandbox_id] = expires_at
        payload = json.dumps(
            {"sid": sandbox_id, "exp": expires_at, "n": secrets.token_hex(6)},
            separators=(",", ":"),
        ).encode()
        encoded = _b64encode(payload)
        return f"{_PREFIX}.{encoded}.{self._sign(encoded)}", float(expires_at)

    def verify(self, token: str, *, now: float | None = None) -> str:
        """Return the sandbox id the token was issued for, or raise ``TokenError``."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _PREFIX:
            raise TokenError("malformed token")
        _, encoded, signature = parts
        if not hmac.compare_digest(self._sign(encoded), signature):
            raise TokenError("bad token signature")
        try:
            payload = json.loads(_b64decode(encoded))
            sandbox_id = payload["sid"]
            expires = payload["exp"]
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise TokenError("malformed token") from exc
        if not isinstance(sandbox_id, str) or not isinstance(expires, int):
            raise TokenError("malformed token")
        if expires <= (time.time() if now is None else now):
            raise TokenError("token expired; refresh it with POST /v1/sandboxes/{id}/token/refresh")
        return sandbox_id

    def _sign(self, encoded: str) -> str:
        return _b64encode(hmac.new(self.secret, encoded.encode(), hashlib.sha256).digest())
