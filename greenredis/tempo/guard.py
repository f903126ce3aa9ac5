"""Who may see Tempo, as a plain object (no Flask): the Host allowlist, basic-auth
checks rate-limited per client address, single-use websocket tokens bound to
the Host they were issued for, the Origin check and the security headers."""

from __future__ import annotations

import collections
import hmac
import math
import os
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

__all__ = ["Guard", "Login", "LOOPBACK", "WS_SALT", "host_allowed", "CSP"]

WS_SALT = "greenredis.tempo.websocket"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})

CSP = (
    "default-src 'self'; connect-src 'self'; img-src 'self' data:; style-src 'self'; "
    "script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)


def host_allowed(host: str | None, allowed: frozenset[str]) -> bool:
    """Whether a ``Host`` header names loopback or an entry of ``allowed`` (lower
    case ``name`` or ``name:port``; ``*`` allows any)."""
    if "*" in allowed:
        return True
    host = (host or "").strip().lower()
    try:
        name = urlsplit("//" + host).hostname
    except ValueError:
        return False
    return bool(name) and (name in LOOPBACK or name in allowed or host in allowed)


@dataclass(frozen=True, slots=True)
class Login:
    """The verdict on one request's credentials: ``ok``, else the status to answer
    (401, or 429 with ``retry_after`` seconds)."""

    ok: bool
    status: int = 200
    retry_after: int = 0


class Guard:
    """The checks every request goes through.

    Failed logins (a wrong password, not a missing one) fill a per-address bucket
    that leaks one attempt per ``login_every`` seconds; at ``login_burst`` the
    address gets 429 without its password being checked, until the bucket has
    room. Websocket tokens carry a nonce and the ``Host`` they were issued for;
    each is accepted once (in this process) within ``token_ttl`` seconds.
    """

    def __init__(
        self,
        password: str | None,
        secret_key: str,
        hosts: frozenset[str] = frozenset(),
        origins: frozenset[str] = frozenset(),
        token_ttl: float = 60.0,
        login_burst: int = 10,
        login_every: float = 6.0,
        max_addresses: int = 10000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.password = password or None
        self.hosts = hosts
        self.origins = origins
        self.token_ttl = token_ttl
        self.login_burst = login_burst
        self.login_every = login_every
        self.max_addresses = max_addresses
        self.clock = clock
        self.signer = URLSafeTimedSerializer(secret_key, salt=WS_SALT)
        self._failures: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()
        self._used: collections.OrderedDict[str, float] = collections.OrderedDict()  # nonce -> expiry
        self.stats: collections.Counter[str] = collections.Counter()

    # -- hosts ---------------------------------------------------------------
    def host_ok(self, host: str | None) -> bool:
        return host_allowed(host, self.hosts)

    # -- basic auth ----------------------------------------------------------
    def _level(self, address: str, now: float) -> float:
        level, since = self._failures.get(address, (0.0, now))
        return max(0.0, level - (now - since) / self.login_every)

    def login(self, address: str, given: str | None) -> Login:
        """Check a basic-auth password (None: none sent) from ``address``."""
        if self.password is None:
            return Login(True)
        now = self.clock()
        level = self._level(address, now)
        if level + 1 > self.login_burst:
            self.stats["login_limited"] += 1
            return Login(False, 429, max(1, math.ceil((level + 1 - self.login_burst) * self.login_every)))
        if given is not None and hmac.compare_digest(given.encode(), self.password.encode()):
            return Login(True)
        if given is None:
            return Login(False, 401)  # a browser's first request before it prompts
        self.stats["login_failed"] += 1
        self._failures.pop(address, None)
        self._failures[address] = (level + 1, now)
        while len(self._failures) > self.max_addresses:  # the least recently failed go first
            self._failures.popitem(last=False)
        return Login(False, 401)

    # -- websocket tokens ----------------------------------------------------
    def issue_token(self, host: str) -> str | None:
        """A token for one websocket to ``host`` (None without a password)."""
        if self.password is None:
            return None
        return self.signer.dumps({"n": os.urandom(12).hex(), "h": host.lower()})

    def _check_token(self, token: str | None, host: str) -> str | None:
        if not token:
            return "token required"
        try:
            data = self.signer.loads(token, max_age=max(1, math.ceil(self.token_ttl)))
        except SignatureExpired:
            return "token expired"
        except BadSignature:
            return "bad token"
        if not isinstance(data, dict) or not isinstance(data.get("n"), str):
            return "bad token"
        if data.get("h") != host.lower():
            return "token issued for another host"
        now = self.clock()
        used = self._used
        while used and next(iter(used.values())) <= now:  # expiries are in issue order
            used.popitem(last=False)
        if data["n"] in used:
            return "token already used"
        used[data["n"]] = now + self.token_ttl + 1.0
        return None

    def origin_ok(self, origin: str, host: str) -> bool:
        origin = origin.lower().rstrip("/")
        if origin in self.origins:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc == host.lower()

    def websocket_problem(self, host: str, origin: str | None, token: str | None) -> str | None:
        """Why a websocket upgrade is refused, or None. With a password the signed
        token (only handed out behind basic auth) and the Origin check stop
        cross-site and rebinding pages; without one, the Host must be ours."""
        if self.password is None and not self.host_ok(host):
            return f"Host {host[:200]!r} is not allowed: add it to TEMPO_HOSTS"
        if origin is not None and not self.origin_ok(origin, host):
            return "foreign Origin"
        if self.password is not None:
            return self._check_token(token, host)
        return None

    # -- responses -----------------------------------------------------------
    @staticmethod
    def headers(https: bool) -> dict[str, str]:
        """Security headers for every response; HSTS only over HTTPS."""
        h = {
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
            "X-Frame-Options": "DENY",
            "Content-Security-Policy": CSP,
        }
        if https:
            h["Strict-Transport-Security"] = "max-age=31536000"
        return h
