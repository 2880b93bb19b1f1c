"""What a webhook execution asks for: its callback URL (checked against the allowed hosts),
the headers to send with it and the signing secret, each refused with a 400 before anything
runs.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs
from yarl import URL

from ..._webhooks import SIGNATURE_HEADER, TIMESTAMP_HEADER
from ..errors import ApiError, bad_request
from .tokens import is_header_text

__all__ = [
    "CALLBACK_HOSTS_ENV",
    "DEFAULT_CALLBACK_HOSTS",
    "Callback",
    "CallbackHosts",
    "parse_callback",
]

#: Comma-separated callback hosts, read when ``LocalBackend(callback_hosts=None)``.
CALLBACK_HOSTS_ENV = "HOPX_LOCAL_CALLBACK_HOSTS"
#: Loopback only.
DEFAULT_CALLBACK_HOSTS = ("localhost", "127.0.0.0/8", "::1")


_MAX_URL = 2048
_MAX_HEADERS = 32
_MAX_HEADER_BYTES = 8192
_MAX_SECRET = 1024
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,128}$")
#: Headers the server sets itself; a caller cannot replace them.
_RESERVED = frozenset(
    {
        "host",
        "content-type",
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
        "te",
        "trailer",
        "expect",
        "keep-alive",
        "proxy-authorization",
        "proxy-connection",
        TIMESTAMP_HEADER.lower(),
        SIGNATURE_HEADER.lower(),
    }
)


class CallbackHosts:
    """The hosts a callback URL may name: host names, ``*.suffix``, IP addresses, networks.

    ``"*"`` allows every host. A name is matched as written (``localhost`` is whatever the
    server's resolver says it is); an IP address or network is matched against an IP
    literal in the URL.
    """

    def __init__(self, entries: Iterable[str]) -> None:
        self.any = False
        self.names: set[str] = set()
        self.suffixes: list[str] = []
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for raw in entries:
            entry = raw.strip().lower()
            if not entry:
                continue
            if entry == "*":
                self.any = True
            elif entry.startswith("*."):
                self.suffixes.append(entry[1:])
            else:
                try:
                    self.networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                except ValueError:
                    if not _TOKEN.match(entry) or "/" in entry:
                        raise ValueError(f"not a host, IP address or network: {raw!r}") from None
                    self.names.add(entry.rstrip("."))

    @classmethod
    def from_setting(cls, hosts: Iterable[str] | None) -> CallbackHosts:
        """``hosts``, else ``$HOPX_LOCAL_CALLBACK_HOSTS``, else loopback only."""
        if hosts is None:
            env = os.environ.get(CALLBACK_HOSTS_ENV)
            hosts = env.split(",") if env and env.strip() else DEFAULT_CALLBACK_HOSTS
        return cls(hosts)

    def allows(self, host: str) -> bool:
        if self.any:
            return True
        host = host.lower().strip("[]").rstrip(".")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host in self.names or any(host.endswith(s) for s in self.suffixes)
        return any(address in network for network in self.networks)

    def check(self, raw: str) -> str:
        """``raw`` if it is an http(s) URL to an allowed host, else the 400 ``ApiError``."""
        if len(raw) > _MAX_URL or not is_header_text(raw):
            raise bad_request(f"'callback_url' must be printable ASCII of at most {_MAX_URL}")
        try:
            url = URL(raw)
        except ValueError:
            raise bad_request("'callback_url' is not a URL") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise bad_request("'callback_url' must be an http:// or https:// URL with a host")
        if url.user is not None or url.password is not None:
            raise bad_request("'callback_url' must not carry credentials (use callback_headers)")
        if not self.allows(url.host):
            raise ApiError(
                400,
                "CALLBACK_NOT_ALLOWED",
                f"callback host {url.host!r} is not allowed; the local backend posts only to "
                f"the hosts set by callback_hosts / ${CALLBACK_HOSTS_ENV} (default: loopback)",
            )
        return raw


@attrs.define
class Callback:
    """Where and how to deliver one result. The secret and headers never show in a repr."""

    url: str
    headers: dict[str, str] = attrs.field(factory=dict, repr=False)
    secret: str | None = attrs.field(default=None, repr=False)


def _callback_headers(body: Mapping[str, Any]) -> dict[str, str]:
    value = body.get("callback_headers")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise bad_request("'callback_headers' must be an object of header names to strings")
    if len(value) > _MAX_HEADERS:
        raise bad_request(f"'callback_headers' may hold at most {_MAX_HEADERS} headers")
    headers: dict[str, str] = {}
    size = 0
    for name, text in value.items():
        if not isinstance(name, str) or not _TOKEN.match(name):
            raise bad_request("'callback_headers' has a name that is no HTTP header name")
        if not isinstance(text, str) or not is_header_text(text):
            raise bad_request(f"'callback_headers' value of {name!r} must be printable ASCII")
        if name.lower() in _RESERVED:
            raise bad_request(f"'callback_headers' must not set {name!r} (the server sets it)")
        size += len(name) + len(text)
        headers[name] = text
    if size > _MAX_HEADER_BYTES:
        raise bad_request(f"'callback_headers' may hold at most {_MAX_HEADER_BYTES} bytes")
    return headers


def _secret(body: Mapping[str, Any]) -> str | None:
    value = body.get("callback_signature_secret")
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_SECRET:
        raise bad_request(
            f"'callback_signature_secret' must be a string of 1 to {_MAX_SECRET} characters"
        )
    return value


def parse_callback(body: Mapping[str, Any], hosts: CallbackHosts) -> Callback:
    """The callback of a request body, checked (400 before anything starts)."""
    raw = body.get("callback_url")
    if not isinstance(raw, str) or not raw:
        raise bad_request("'callback_url' is required (a string)")
    return Callback(url=hosts.check(raw), headers=_callback_headers(body), secret=_secret(body))
