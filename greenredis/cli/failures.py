"""What went wrong, in one line a person can act on.

``Fatal`` is what a subcommand raises to stop with a message (and a hint) instead of
a traceback; ``describe`` turns the errors of everyday mistakes (a refused
connection, a wrong password, a port that is not Redis) into such a line; ``check_url``
and ``probe`` find them before a subcommand starts its real work.
"""

import errno
from urllib.parse import urlsplit

from greenredis.errors import (
    AuthenticationError,
    ConnectionError,
    MasterNotFoundError,
    ProtocolError,
    RedisError,
    ReplyError,
    SetupRefusedError,
    TimeoutError,
)
from greenredis.url import SentinelURL, is_cluster_url, is_sentinel_url, redact_text, redact_url

URL_HINT = "set REDIS_URL or --url, e.g. redis://:PASSWORD@127.0.0.1:6379/0"
CLUSTER_HINT = (
    "the URL lists any of the cluster's nodes: redis+cluster://[:PASSWORD@]HOST:PORT[,HOST:PORT...]"
)
SENTINEL_HINT = (
    "the URL lists the sentinels and the service they watch: "
    "redis+sentinel://[:PASSWORD@]HOST:26379[,HOST:26379...]/SERVICE[/DB]"
)


class Fatal(Exception):
    """Stop the command: ``message`` on one line, then ``hint`` if any; exit ``code``.
    ``transient``: the cause may pass by itself (Redis not answering yet)."""

    def __init__(self, message, hint=None, code=1, transient=False):
        super().__init__(message)
        self.message, self.hint, self.code, self.transient = message, hint, code, transient


def auth_problem(text):
    """``"wrongpass"`` / ``"noauth"`` / ``"nopass"`` for AUTH failures in an error text, else None."""
    upper = text.upper()
    if "WRONGPASS" in upper or "INVALID PASSWORD" in upper or "INVALID USERNAME-PASSWORD" in upper:
        return "wrongpass"
    if "NOAUTH" in upper or "AUTHENTICATION REQUIRED" in upper:
        return "noauth"
    if "NO PASSWORD IS SET" in upper or "WITHOUT ANY PASSWORD CONFIGURED" in upper:
        return "nopass"
    return None


def describe(exc, address="Redis", timeout=None, cluster=False):
    """(message, hint) for an error met talking to Redis at ``address`` (``cluster``: a
    Redis Cluster, named by a ``redis+cluster://`` URL, and hinted with one)."""
    text = str(exc)
    url_hint = CLUSTER_HINT if cluster else URL_HINT
    sentinel = _describe_sentinel(exc, text)
    if sentinel is not None:
        return sentinel
    auth = auth_problem(text) if isinstance(exc, (ReplyError, ConnectionError)) else None
    if isinstance(exc, AuthenticationError) and auth is None:
        auth = "wrongpass"
    if auth == "wrongpass":
        return (
            f"{address} refused the password (WRONGPASS)",
            "check the user name and password in REDIS_URL or --url",
        )
    if auth == "noauth":
        return (
            f"{address} needs a password (NOAUTH)",
            "put the password in the URL: "
            + (
                "redis+cluster://:PASSWORD@host:port,host:port"
                if cluster
                else "redis://:PASSWORD@host:port/db"
            ),
        )
    if auth == "nopass":
        return (
            f"the URL has a password but {address} has none set (AUTH refused)",
            "remove the password from the URL, or set requirepass on the server",
        )
    if isinstance(exc, SetupRefusedError):  # e.g. SELECT 99 on a Redis of 16 dbs
        return (
            f"{address} refused the connection's setup: {redact_text(text)}",
            "check the db (the URL's /DB or ?db=) and client_name in REDIS_URL or --url",
        )
    if isinstance(exc, ProtocolError) or "not RESP" in text:
        return (
            f"{address} does not speak Redis (it answered with bytes that are not RESP)",
            "is that the Redis port? " + url_hint,
        )
    if isinstance(exc, TimeoutError) or "timed out" in text:
        within = f" within {timeout:g} s" if timeout else ""
        return (
            f"no answer from {address}{within} (a firewall, a paused server, or not Redis?)",
            url_hint,
        )
    if isinstance(exc, (ConnectionError, OSError)):
        if "refused" in text.lower() or getattr(exc, "errno", None) == errno.ECONNREFUSED:
            return (f"cannot connect to {address}: connection refused (is Redis running there?)", url_hint)
        if "resolve" in text or "Name or service not known" in text:
            return (f"cannot resolve the host of {address}", url_hint)
        if "closed" in text:
            return (f"{address} closed the connection at once: is it Redis?", url_hint)
        return (f"cannot talk to {address}: {redact_text(text)}", url_hint)
    if isinstance(exc, ReplyError):
        return (f"{address} refused: {redact_text(text)}", None)
    return (f"{address}: {redact_text(text)}", None)


def _describe_sentinel(exc, text):
    """(message, hint) for what a Sentinel client says when it finds no master, else None."""
    if isinstance(exc, MasterNotFoundError):
        return (redact_text(text), "check the service name: the path of the URL, /SERVICE[/DB]")
    if isinstance(exc, ConnectionError) and (" failed over to " in text or "no longer the master of" in text):
        return (redact_text(text), None)  # a switch cut the call: nothing to fix
    at = text.find("no sentinel of ")
    if isinstance(exc, ConnectionError) and at > 0 and text.endswith(")"):
        text = text[at:-1]  # "... unreachable, next attempt in 0.1s (last error: no sentinel of ...)"
    if isinstance(exc, ConnectionError) and text.startswith("no sentinel of "):
        if "unknown command 'SENTINEL'" in text:
            return (
                f"{redact_text(text.partition(':')[0])}: a listed address is a Redis, not a sentinel",
                SENTINEL_HINT,
            )
        refused = "refused" in text.lower()
        return (
            redact_text(text) if not refused else f"{redact_text(text)} (are the sentinels running?)",
            SENTINEL_HINT,
        )
    return None


def where(params):
    """What messages call the server of ``check_url``'s result, or of a client."""
    if isinstance(params, SentinelURL):
        return f"the master of {params.service!r}"
    service = getattr(params, "service", None)  # a Sentinel client
    if service is not None:
        return f"the {params.role} of {service!r}"
    return getattr(params, "params", params).address


def check_url(url, what="Redis URL"):
    """Parse ``url`` as the client will; a ``Fatal`` (exit 2) that never shows its password.
    Returns its ``ConnectionParams``, or for ``redis+sentinel://`` its ``SentinelURL``."""
    from greenredis.url import parse_url

    shown = redact_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as e:
        raise Fatal(f"bad {what} {shown!r}: {e}", URL_HINT, code=2) from None
    if not parts.scheme or "://" not in url:
        hint = URL_HINT
        if url.startswith("/"):
            hint = f"for a unix socket write unix://{url}; otherwise {URL_HINT}"
        schemes = "redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://"
        raise Fatal(f"{shown!r} is not a Redis URL ({schemes})", hint, code=2)
    if is_sentinel_url(url):
        from greenredis.url import parse_sentinel_url

        try:
            return parse_sentinel_url(url)
        except ValueError as e:
            message = redact_text(str(e).replace(repr(url), repr(shown)), _passwords(parts))
            raise Fatal(f"bad {what}: {message}", SENTINEL_HINT, code=2) from None
    if is_cluster_url(url):
        return _check_cluster_url(url, shown, what)
    try:
        if parts.scheme.lower() != "unix" and parts.port == 0:
            raise ValueError(f"port 0 in {url!r} is not a port")
        params = parse_url(url)
    except ValueError as e:
        message = redact_text(str(e).replace(repr(url), repr(shown)), _passwords(parts))
        raise Fatal(f"bad {what}: {message}", URL_HINT, code=2) from None
    if not params.unix_socket_path and not 0 < params.port < 65536:
        raise Fatal(f"bad {what} {shown!r}: port {params.port} is not in 1-65535", URL_HINT, code=2)
    return params


def _check_cluster_url(url, shown, what):
    from greenredis.url import parse_cluster_url

    try:
        nodes, params = parse_cluster_url(url)
    except ValueError as e:
        raise Fatal(f"bad {what}: {redact_text(str(e))}", CLUSTER_HINT, code=2) from None
    for _host, port in nodes:
        if not 0 < port < 65536:
            raise Fatal(f"bad {what} {shown!r}: port {port} is not in 1-65535", CLUSTER_HINT, code=2)
    return params


def _passwords(parts):
    from urllib.parse import unquote

    try:
        pw = parts.password
    except ValueError:
        return []
    return [pw, unquote(pw)] if pw else []


def probe(url, timeout=5.0):
    """Connect to ``url`` and PING within ``timeout``; a ``Fatal`` saying what is wrong.

    Returns what ``check_url`` does. The message says which it is: a bad URL, a
    refused connection, no answer in time, WRONGPASS / NOAUTH, or not Redis; for a
    ``redis+sentinel://`` URL also no sentinel answering, an unknown service, or an
    address that is not a sentinel."""
    from greenredis.client.redis import Redis

    params = check_url(url)
    address = where(params)
    cluster = is_cluster_url(url)
    if cluster:  # any node answers for the cluster: the slot map is loaded first
        from greenredis.client.cluster import Cluster
        from greenredis.url import parse_cluster_url

        nodes = parse_cluster_url(url)[0]
        address = ",".join(f"{h}:{p}" for h, p in nodes)
        r = Cluster(nodes, params=params.replace(connect_timeout=timeout, timeout=timeout), retry_for=0)
    else:
        options = {"connect_timeout": timeout, "timeout": timeout}
        if isinstance(params, SentinelURL):
            options["failover_timeout"] = timeout  # no master within it: say so, do not wait 30 s
        r = Redis.from_url(url, **options)
    try:
        reply = r.cmd(["PING"])
    except RedisError as e:
        message, hint = describe(e, address, timeout, cluster)
        raise Fatal(message, hint, transient=transient(e)) from None
    finally:
        r.close()
    if reply != b"PONG":
        raise Fatal(
            f"{address} answered PING with {reply!r:.60}: is it Redis?", CLUSTER_HINT if cluster else URL_HINT
        )
    return params


def transient(exc):
    """True for errors that may pass by themselves (refused, no answer, a dropped link);
    False for those that need a fix (a wrong password, not Redis, a service no sentinel
    knows, an address that is not a sentinel, a db the server refuses)."""
    text = str(exc)
    if auth_problem(text) or isinstance(exc, (AuthenticationError, ProtocolError)) or "not RESP" in text:
        return False
    if isinstance(exc, (MasterNotFoundError, SetupRefusedError)) or "unknown command 'SENTINEL'" in text:
        return False
    return isinstance(exc, (ConnectionError, TimeoutError, OSError))
