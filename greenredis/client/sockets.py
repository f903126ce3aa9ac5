"""Opening sockets to Redis: TCP, unix or TLS, the one place that does it.

``connect(params, timeout)`` returns a connected socket ready for RESP (an
``ssl.SSLSocket`` for ``rediss://``, handshake done). The pipelined client uses
the two halves, ``open_socket`` (a plain non-blocking socket) and ``tls_context``,
because it runs TLS through memory BIOs. Every failure is a ``ConnectionError``
(out of file descriptors included); TLS verifies the server by default, as
redis-py and browsers do.
"""

from __future__ import annotations

import _socket
import errno
import socket as _stdsocket
import ssl
from time import monotonic
from typing import Any

from gevent.socket import getaddrinfo, wait_write

from greenredis.errors import ConnectionError, TimeoutError

__all__ = ["connect", "open_socket", "tls_context", "cert_reqs"]

# Idle seconds before the first keepalive probe, then between probes, and how many
# unanswered probes close the socket: a dead peer (NAT drop) is noticed in ~2 min.
KEEPALIVE = (60, 15, 4)

_CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


def cert_reqs(value: Any) -> ssl.VerifyMode:
    """``ssl_cert_reqs`` as an ``ssl.VerifyMode``: ``"none"``, ``"optional"``, ``"required"``
    (case-insensitive), an ``ssl.CERT_*`` constant, or None for required."""
    if value is None:
        return ssl.CERT_REQUIRED
    if isinstance(value, ssl.VerifyMode):
        return value
    if isinstance(value, str) and value.lower() in _CERT_REQS:
        return _CERT_REQS[value.lower()]
    if isinstance(value, int) and value in tuple(_CERT_REQS.values()):
        return ssl.VerifyMode(value)
    raise ValueError(f"ssl_cert_reqs must be 'none', 'optional' or 'required', not {value!r}")


def tls_context(params: Any, cls: type[ssl.SSLContext] = ssl.SSLContext) -> ssl.SSLContext:
    """The client TLS context for ``params``: the system trust store (or ``ssl_ca_certs``),
    the server certificate required and its name checked unless told otherwise, and a
    client certificate when ``ssl_certfile`` is set. ``cls``: gevent's ``SSLContext``
    for a cooperative ``SSLSocket``."""
    mode = cert_reqs(params.ssl_cert_reqs)
    context = cls(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = mode != ssl.CERT_NONE and bool(params.ssl_check_hostname)
    context.verify_mode = mode
    try:
        if params.ssl_ca_certs:
            context.load_verify_locations(cafile=params.ssl_ca_certs)
        elif mode != ssl.CERT_NONE:
            context.load_default_certs()
        if params.ssl_certfile:
            context.load_cert_chain(params.ssl_certfile, params.ssl_keyfile)
    except (OSError, ssl.SSLError) as e:
        raise ConnectionError(f"TLS setup for {params.address} failed: {e}") from None
    return context


def _keepalive(sock: Any) -> None:
    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_KEEPALIVE, 1)
    for name, value in zip(("TCP_KEEPIDLE", "TCP_KEEPINTVL", "TCP_KEEPCNT"), KEEPALIVE):
        option = getattr(_socket, name, None)
        if option is not None:
            sock.setsockopt(_socket.IPPROTO_TCP, option, value)


def open_socket(params: Any, timeout: float | None) -> Any:
    """A connected, non-blocking ``_socket.socket`` (TCP with NODELAY and keepalive, or unix)."""
    if params.unix_socket_path:
        addrs = [(_socket.AF_UNIX, params.unix_socket_path)]
    else:
        try:
            infos = getaddrinfo(params.host, params.port, 0, _socket.SOCK_STREAM)
        except OSError as e:
            raise ConnectionError(f"cannot resolve {params.host}: {e}") from None
        addrs = [(family, sockaddr) for family, _, _, _, sockaddr in infos]
    deadline = None if timeout is None else monotonic() + timeout
    last: BaseException | None = None
    for family, sockaddr in addrs:
        try:
            sock = _socket.socket(family, _socket.SOCK_STREAM)
        except OSError as e:  # EMFILE, ENFILE, ENOBUFS: say so as a ConnectionError
            raise ConnectionError(f"cannot connect to {params.address}: no socket: {e}") from None
        try:
            sock.setblocking(False)
            err = sock.connect_ex(sockaddr)
            if err in (errno.EINPROGRESS, errno.EAGAIN, errno.EWOULDBLOCK):
                left = None if deadline is None else max(0.0, deadline - monotonic())
                wait_write(sock.fileno(), left, TimeoutError(f"timed out after {timeout}s"))
                err = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
            if err:
                raise OSError(err, errno.errorcode.get(err, str(err)))
            if family != _socket.AF_UNIX:
                sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
                _keepalive(sock)
            return sock
        except (OSError, TimeoutError) as e:
            sock.close()
            last = e
    raise ConnectionError(f"cannot connect to {params.address}: {last}")


def connect(params: Any, timeout: float | None = None) -> _stdsocket.socket:
    """A connected gevent-cooperative socket (TLS handshake done for ``params.ssl``);
    ``timeout`` (default ``params.connect_timeout``) bounds connecting and the handshake."""
    from gevent import socket as gsocket
    from gevent import ssl as gssl

    if timeout is None:
        timeout = params.connect_timeout
    raw = open_socket(params, timeout)
    sock = gsocket.socket(fileno=raw.detach())
    sock.settimeout(timeout)
    if not params.ssl:
        return sock
    try:
        tls = tls_context(params, gssl.SSLContext).wrap_socket(sock, server_hostname=params.host)
    except (OSError, ssl.SSLError) as e:
        sock.close()
        raise ConnectionError(f"TLS handshake with {params.address} failed: {e}") from None
    return tls
