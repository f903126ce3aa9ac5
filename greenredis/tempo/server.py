"""The HTTP server Tempo runs on: gevent's ``WSGIServer`` with gevent-websocket's
handler, hardened against clients that connect and never finish a request.

Before a request's headers are complete a connection holds a pool slot and
buffer memory, so each one is bounded:

``TEMPO_HEADER_TIMEOUT``   seconds from the first byte of a request (or from the
                           connection for the first request) to the end of its
                           headers; then the connection is closed (default 10)
``TEMPO_IDLE_TIMEOUT``     seconds a keep-alive connection may wait for its next
                           request (default 30)
``TEMPO_MAX_HEADER_BYTES`` bytes of header lines per request; more is answered 431
                           (default 65536)
``TEMPO_MAX_PER_IP``       connections (websockets included) per client address;
                           more are answered 503 and closed (default 256; 0: no
                           cap; behind a proxy every client has the proxy's address)

A websocket is no longer subject to any of these once upgraded.
"""

from __future__ import annotations

import collections
import logging
import os
from typing import Any, Mapping

import gevent
from gevent import pywsgi
from gevent.pool import Pool
from gevent.pywsgi import LoggingLogAdapter, WSGIServer
from geventwebsocket.handler import WebSocketHandler

__all__ = ["ServerLimits", "TempoHandler", "TempoServer", "make_server"]

log = logging.getLogger("greenredis.tempo")
# gevent's own messages (bad requests, wsgi.errors), through logging and so masked
http_log = logging.getLogger("greenredis.tempo.http")


class HeadersTooLarge(ValueError):
    """The request's header lines exceed the byte cap."""


class ServerLimits:
    """The pre-request bounds (see the module docstring)."""

    __slots__ = ("header_timeout", "idle_timeout", "max_header_bytes", "max_per_ip")

    def __init__(
        self,
        header_timeout: float = 10.0,
        idle_timeout: float = 30.0,
        max_header_bytes: int = 65536,
        max_per_ip: int = 256,
    ) -> None:
        self.header_timeout = header_timeout
        self.idle_timeout = idle_timeout
        self.max_header_bytes = max_header_bytes
        self.max_per_ip = max_per_ip

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ServerLimits:
        """ValueError naming the variable for a value that is not a number, negative,
        NaN, or 0 where 0 is not "none" (TEMPO_MAX_HEADER_BYTES)."""
        env = os.environ if env is None else env
        d = cls()

        def num(kind: Any, var: str, default: Any, what: str, least: int = 0) -> Any:
            raw = env.get(var) or default
            try:
                value = kind(raw)
            except (TypeError, ValueError, OverflowError):
                value = None
            if value is None or not value >= least:  # NaN too; inf: no deadline, as 0
                raise ValueError(f"{var} must be {what}, not {raw!r}")
            return value

        return cls(
            header_timeout=num(float, "TEMPO_HEADER_TIMEOUT", d.header_timeout, "seconds >= 0 (0: none)"),
            idle_timeout=num(float, "TEMPO_IDLE_TIMEOUT", d.idle_timeout, "seconds >= 0 (0: none)"),
            max_header_bytes=num(int, "TEMPO_MAX_HEADER_BYTES", d.max_header_bytes, "a positive integer", 1),
            max_per_ip=num(int, "TEMPO_MAX_PER_IP", d.max_per_ip, "an integer >= 0 (0: no cap)"),
        )


class _CappedLines:
    """The reader ``http.client.parse_headers`` gets: counts the header bytes."""

    __slots__ = ("fp", "left")

    def __init__(self, fp: Any, cap: int) -> None:
        self.fp = fp
        self.left = cap

    def readline(self, size: int = -1) -> bytes:
        line = self.fp.readline(min(size, self.left + 1) if size >= 0 else self.left + 1)
        self.left -= len(line)
        if self.left < 0:
            raise HeadersTooLarge("request headers too large")
        return line


def _response(status: str, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nConnection: close\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


_RESPONSES = {
    431: _response("431 Request Header Fields Too Large", b"request headers too large\n"),
    503: _response("503 Service Unavailable", b"too many connections from this address\n"),
}


class TempoHandler(WebSocketHandler):
    """gevent-websocket's handler with a deadline on reading each request's line
    and headers, an idle timeout between keep-alive requests and a header byte cap."""

    _deadline: gevent.Timeout | None = None
    _requests = 0

    def read_requestline(self) -> str:
        limits: ServerLimits = self.server.limits
        if self._requests:  # keep-alive: wait idle for the next request's first byte
            self._arm(limits.idle_timeout)
            self.rfile.peek(1)
        self._arm(limits.header_timeout)
        self._requests += 1
        return super().read_requestline()

    def read_request(self, raw_requestline: str) -> Any:
        try:
            return super().read_request(raw_requestline)
        finally:
            self._disarm()  # headers read: the application (and any websocket) runs unbounded

    def MessageClass(self, fp: Any, *args: Any) -> Any:
        return super().MessageClass(_CappedLines(fp, self.server.limits.max_header_bytes), *args)

    def _handle_client_error(self, ex: BaseException) -> Any:
        if isinstance(ex, HeadersTooLarge):
            self.close_connection = True
            return ("431", _RESPONSES[431])
        if not isinstance(ex, (ValueError, pywsgi._InvalidClientInput)):
            # gevent would print this one's traceback to stderr first: the line says it
            self.log_error("invalid request (from %s): %s: %s", self.client_address, type(ex).__name__, ex)
            return ("400", pywsgi._BAD_REQUEST_RESPONSE)
        return super()._handle_client_error(ex)

    def log_error(self, msg: str, *args: Any) -> None:
        """gevent's lines about bad requests, without its socket repr in front, to
        ``http_log`` as WARNING: the client's mistake (or probe), not the server's."""
        try:
            message = msg % args if args else msg
        except (TypeError, ValueError):
            message = f"{msg} {args!r}"
        http_log.warning("tempo: %s", message)

    def _log_error(self, t: Any, v: Any, tb: Any) -> None:
        # gevent hands an application's exception to the hub, which prints the traceback
        # and the request's environ (query string, headers: secrets) to stderr unmasked.
        # One line through logging instead (masked by the CLI's formatter); the traceback
        # only at debug level.
        if issubclass(t, gevent.GreenletExit):
            return
        env = self.environ or {}
        where = f"{env.get('REQUEST_METHOD', '?')} {env.get('PATH_INFO', '?')}"  # no query string
        log.error("tempo: %s failed: %s: %s", where, t.__name__, v)
        log.debug("tempo: %s failed", where, exc_info=(t, v, tb))

    def handle_one_request(self) -> Any:
        try:
            return super().handle_one_request()
        except gevent.Timeout as t:
            if t is not self._deadline:
                raise
            self.server.stats["deadline_closed"] += 1
            return None  # closes the connection
        finally:
            self._disarm()

    def _arm(self, seconds: float) -> None:
        self._disarm()
        if seconds and seconds > 0:
            self._deadline = gevent.Timeout.start_new(seconds)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.close()
            self._deadline = None


class TempoServer(WSGIServer):
    """A ``WSGIServer`` that caps connections per client address (``limits.max_per_ip``)."""

    def __init__(self, *args: Any, limits: ServerLimits | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("handler_class", TempoHandler)
        super().__init__(*args, **kwargs)
        self.limits = limits or ServerLimits()
        self.per_ip: collections.Counter[str] = collections.Counter()
        self.stats: collections.Counter[str] = collections.Counter()

    def stop(self, timeout: float | None = None) -> None:
        """Close the app's websockets with 1001 (going away) first, then stop."""
        shutdown = getattr(self.application, "extensions", {}).get("tempo_shutdown")
        if shutdown is not None:
            try:
                shutdown()
                gevent.sleep(0.2)  # let the writers send their close frames
            except Exception:
                log.exception("tempo: closing the websockets failed")
        super().stop(timeout)

    def handle(self, sock: Any, address: Any) -> None:
        ip = address[0] if isinstance(address, tuple) else str(address)
        cap = self.limits.max_per_ip
        if cap and self.per_ip[ip] >= cap:
            self.stats["per_ip_refused"] += 1
            n = self.stats["per_ip_refused"]
            if n & (n - 1) == 0:  # rate-limited: the 1st, 2nd, 4th, ... refusal
                log.warning("tempo: refusing a connection from %s: %d open (TEMPO_MAX_PER_IP)", ip, cap)
            try:
                sock.sendall(_RESPONSES[503])
            except OSError:
                pass
            sock.close()
            return
        self.per_ip[ip] += 1
        try:
            super().handle(sock, address)
        finally:
            self.per_ip[ip] -= 1
            if not self.per_ip[ip]:
                del self.per_ip[ip]


def make_server(
    app: Any,
    host: str,
    port: int,
    max_connections: int = 10000,
    access_log: bool = True,
    limits: ServerLimits | None = None,
) -> TempoServer:
    """A Tempo server that upgrades websocket requests (not started); ``limits``
    default to ``ServerLimits.from_env()``."""
    # gevent-websocket's handler logs requests to this logger itself (not to ``log``)
    logging.getLogger("geventwebsocket.handler").setLevel(logging.INFO if access_log else logging.WARNING)
    return TempoServer(
        (host, port),
        app,
        spawn=Pool(max_connections),
        backlog=2048,
        log=None,
        error_log=LoggingLogAdapter(http_log, logging.ERROR),
        limits=limits or ServerLimits.from_env(),
    )
