"""Where and how to connect: ``ConnectionParams`` and ``parse_url``."""

import os
import re
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

__all__ = [
    "ConnectionParams",
    "parse_url",
    "DEFAULT_URL",
    "redact_url",
    "redact_text",
    "SentinelURL",
    "parse_sentinel_url",
    "is_sentinel_url",
    "parse_cluster_url",
    "is_cluster_url",
]

DEFAULT_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class ConnectionParams:
    host: str = "127.0.0.1"
    port: int = 6379
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in a repr or a log line
    ssl: bool = False
    ssl_ca_certs: str | None = None
    ssl_check_hostname: bool = True  # with ssl_cert_reqs "none" there is nothing to check
    unix_socket_path: str | None = None
    timeout: float | None = None  # per-call default; None waits as long as the connection lives
    connect_timeout: float = 5.0
    dead_after: float = 30.0  # in-flight commands with no byte from the server for this long: dead
    client_name: str | None = None
    ssl_cert_reqs: str | None = None  # "required" (None), "optional" or "none": no verification
    ssl_certfile: str | None = None  # a client certificate, for tls-auth-clients
    ssl_keyfile: str | None = None
    health_check_interval: float = 0.0  # PING a connection idle this long before using it; 0: never

    def __post_init__(self):
        for name in ("timeout", "connect_timeout", "dead_after", "health_check_interval"):
            value = getattr(self, name)
            if value is not None and not value >= 0:  # NaN too
                raise ValueError(f"{name} must be a number of seconds >= 0 or None, not {value!r}")
        reqs = self.ssl_cert_reqs
        if isinstance(reqs, str) and reqs.lower() not in ("none", "optional", "required"):
            # said now, not as a ValueError from every later call's connect attempt
            raise ValueError(f"ssl_cert_reqs must be 'none', 'optional' or 'required', not {reqs!r}")

    def replace(self, **changes):
        return replace(self, **changes)

    @property
    def address(self):
        if self.unix_socket_path:
            return self.unix_socket_path
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


_FLOAT_OPTIONS = {"timeout", "connect_timeout", "dead_after", "health_check_interval"}
_STR_OPTIONS = {"client_name", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs"}
_BOOL_OPTIONS = {"ssl_check_hostname"}
# redis-py's names for the same things
_ALIASES = {"socket_timeout": "timeout", "socket_connect_timeout": "connect_timeout"}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_url(url=None, **overrides):
    """Parse ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS) or
    ``unix://[[user]:password@]/path?db=N``.

    ``url`` defaults to ``$REDIS_URL``, then to ``redis://127.0.0.1:6379/0``. Query
    options and keyword ``overrides`` win over what the URL says: ``db``, ``timeout``
    (or ``socket_timeout``), ``connect_timeout`` (or ``socket_connect_timeout``),
    ``dead_after``, ``health_check_interval``, ``client_name``, ``ssl_ca_certs``,
    ``ssl_certfile``, ``ssl_keyfile``, ``ssl_cert_reqs`` (``none``/``optional``/``required``)
    and ``ssl_check_hostname`` (``true``/``false``). Any other name is a ValueError.
    """
    url = url or os.environ.get("REDIS_URL") or DEFAULT_URL
    parts = urlsplit(url)
    url = _redact(url, parts)  # what error messages show: never the password
    scheme = parts.scheme.lower()
    if scheme in SENTINEL_SCHEMES:
        raise ValueError(
            f"{url!r} names sentinels, not one server: use Redis.from_url(url) or "
            "greenredis.Sentinel (greenredis.url.parse_sentinel_url parses it)"
        )
    if scheme in _CLUSTER_SCHEMES:
        raise ValueError(
            f"{url!r} names a Redis Cluster: use greenredis.Cluster.from_url (Redis.from_url gives one too)"
        )
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(
            f"unsupported URL scheme {parts.scheme!r} in {url!r}: use redis://, rediss://, unix://, "
            "redis+sentinel:// (sentinels) or redis+cluster://"
        )
    kw = {
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password is not None else None,
    }
    if scheme == "unix":
        if not parts.path:
            raise ValueError(f"unix URL without a socket path: {url!r}")
        kw["unix_socket_path"] = unquote(parts.path)
    else:
        kw["host"] = parts.hostname or "127.0.0.1"
        try:
            kw["port"] = parts.port or 6379
        except ValueError as e:
            raise ValueError(f"bad port in {url!r}") from e
        kw["ssl"] = scheme == "rediss"
        path = parts.path.strip("/")
        if path:
            kw["db"] = _int("db", path, url)
    _query_options(parse_qs(parts.query), url, kw)
    _override(overrides, kw)
    return ConnectionParams(**kw)


def _query_options(query, url, kw, extra=()):
    """The URL's query options into ``kw`` (the last value of each wins); names in
    ``extra`` are left for the caller."""
    for name, values in query.items():
        value = values[-1]
        name = _ALIASES.get(name, name)
        if name in extra:
            continue
        if name == "db":
            kw["db"] = _int("db", value, url)
        elif name in _FLOAT_OPTIONS:
            kw[name] = _seconds(name, value, url)
        elif name in _STR_OPTIONS:
            kw[name] = value
        elif name in _BOOL_OPTIONS:
            if value.lower() not in _TRUE | _FALSE:
                raise ValueError(f"bad {name} {value!r} in {url!r}: true or false")
            kw[name] = value.lower() in _TRUE
        else:
            raise ValueError(f"unknown URL option {name!r} in {url!r}")


def _override(overrides, kw):
    for name, value in overrides.items():
        field = _ALIASES.get(name, name)
        if field not in _FIELDS:
            raise TypeError(f"unknown option {name!r}")
        if value is not None:
            kw[field] = value


def _seconds(name, value, url):
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"bad {name} {value!r} in {url!r}: a number of seconds") from None


# -- redis+sentinel:// -------------------------------------------------------------------

SENTINEL_SCHEME = "redis+sentinel"
SENTINEL_SCHEMES = (SENTINEL_SCHEME, "rediss+sentinel")  # rediss: TLS to the data nodes
SENTINEL_PORT = 26379
_SENTINEL_OPTIONS = (
    "sentinel_username",
    "sentinel_password",
    "sentinel_timeout",
    "failover_timeout",
    "sentinel_ssl",
)
# what TLS to the sentinels (sentinel_ssl) takes from the data nodes' options
_TLS_FIELDS = ("ssl_ca_certs", "ssl_cert_reqs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")


@dataclass(frozen=True)
class SentinelURL:
    """A parsed ``redis+sentinel://`` URL: the sentinels to ask, the service they watch, the
    data nodes' connection options (``params``: its host and port are unused, the sentinels
    say where the master is) and the sentinels' own credentials, timeouts and TLS
    (``sentinel_ssl``: the sentinels speak TLS, verified with the same ``ssl_*`` options)."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    params: ConnectionParams
    sentinel_username: str | None = None
    sentinel_password: str | None = field(default=None, repr=False)
    sentinel_timeout: float = 0.5
    failover_timeout: float = 30.0
    sentinel_ssl: bool = False

    def sentinel_options(self) -> dict[str, Any]:
        """The keywords ``greenredis.Sentinel(self.sentinels, **...)`` takes for this URL."""
        options: dict[str, Any] = {
            "sentinel_password": self.sentinel_password,
            "sentinel_username": self.sentinel_username,
            "sentinel_timeout": self.sentinel_timeout,
            "failover_timeout": self.failover_timeout,
        }
        if self.sentinel_ssl:
            tls = {name: getattr(self.params, name) for name in _TLS_FIELDS}
            options["sentinel_kwargs"] = {"ssl": True, **tls}
        return options


def is_sentinel_url(url: "str | None") -> bool:
    """Whether ``url`` (or, for None, ``$REDIS_URL``) is a ``redis+sentinel://`` (or
    ``rediss+sentinel://``) URL."""
    url = url or os.environ.get("REDIS_URL") or ""
    return url.split("://", 1)[0].lower() in SENTINEL_SCHEMES


def parse_sentinel_url(url=None, **overrides) -> SentinelURL:
    """Parse ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db]``
    (port 26379 by default); ``rediss+sentinel://`` speaks TLS to the data nodes, verified
    as ``rediss://`` does (``ssl_ca_certs``, ``ssl_cert_reqs``...). The user and password
    are the data nodes'; the sentinels' come as the query options ``sentinel_username`` and
    ``sentinel_password``, beside ``sentinel_timeout`` and ``failover_timeout`` (seconds),
    ``sentinel_ssl`` (true: TLS to the sentinels too, with the same ``ssl_*`` options) and
    every option ``parse_url`` takes. Keyword ``overrides`` win, the sentinel ones included."""
    url = url or os.environ.get("REDIS_URL") or ""
    parts = urlsplit(url)
    shown = _redact(url, parts)
    scheme = parts.scheme.lower()
    if scheme not in SENTINEL_SCHEMES:
        raise ValueError(f"not a redis+sentinel:// or rediss+sentinel:// URL: {shown!r}")
    userinfo, _, hosts = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    kw: dict[str, Any] = {"username": unquote(user) or None, "password": unquote(password) if colon else None}
    kw["ssl"] = scheme == "rediss+sentinel"
    sentinels = tuple(_host_port(h, shown) for h in hosts.split(","))
    path = [unquote(p) for p in parts.path.split("/") if p]
    if not path:
        raise ValueError(f"{shown!r} names no service: redis+sentinel://host:port/<service>[/db]")
    if len(path) > 2:
        raise ValueError(f"{shown!r}: the path is /<service>[/db], not {parts.path!r}")
    if len(path) == 2:
        kw["db"] = _int("db", path[1], shown)
    query = parse_qs(parts.query)
    _query_options(query, shown, kw, extra=_SENTINEL_OPTIONS)
    sentinel: dict = {}
    for name in _SENTINEL_OPTIONS:
        if name in query:
            value = query[name][-1]
            if name.endswith("timeout"):
                sentinel[name] = _seconds(name, value, shown)
            elif name == "sentinel_ssl":
                if value.lower() not in _TRUE | _FALSE:
                    raise ValueError(f"bad sentinel_ssl {value!r} in {shown!r}: true or false")
                sentinel[name] = value.lower() in _TRUE
            else:
                sentinel[name] = value
    for name in _SENTINEL_OPTIONS:
        value = overrides.pop(name, None)
        if value is not None:
            sentinel[name] = value
    _override(overrides, kw)
    for name in ("sentinel_timeout", "failover_timeout"):
        value = sentinel.get(name)
        if value is not None and not (isinstance(value, (int, float)) and value > 0):
            raise ValueError(f"{name} must be a number of seconds > 0, not {value!r}")
    return SentinelURL(sentinels, path[0], ConnectionParams(**kw), **sentinel)


def _host_port(text, url):
    text = text.strip()
    if text.startswith("["):  # [IPv6]:port
        host, _, rest = text[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            host = ""
    else:
        host, _, port = text.rpartition(":") if ":" in text else (text, "", "")
    if not host or any(c in host for c in ";/ \t"):  # host:port;host:port is one bad host
        raise ValueError(f"bad sentinel address {text!r} in {url!r}: host:port, comma-separated")
    if not port:
        return (host, SENTINEL_PORT)
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 < number < 65536:
        raise ValueError(f"bad port in sentinel address {text!r} in {url!r}")
    return (host, number)


_CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def is_cluster_url(url):
    """True for ``redis+cluster://`` and ``rediss+cluster://`` URLs."""
    return isinstance(url, str) and url.partition("://")[0].lower() in _CLUSTER_SCHEMES


def parse_cluster_url(url, **overrides):
    """Parse ``redis+cluster://[[user]:password@]host:port[,host:port...][?options]``
    (``rediss+cluster://`` for TLS): returns ``([(host, port), ...], ConnectionParams)``,
    the params being those every node shares (options as for ``parse_url``). A cluster
    has only db 0: any other db is a ValueError."""
    shown = _mask_unknown_options(redact_text(url)) if isinstance(url, str) else url
    if not is_cluster_url(url):
        raise ValueError(f"not a cluster URL: {shown!r}: use redis+cluster://host:port,host:port")
    scheme, _, rest = url.partition("://")
    rest, _, fragment = rest.partition("#")
    rest, qmark, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    userinfo, at, hosts = netloc.rpartition("@")
    nodes = []
    for item in hosts.split(","):
        item = item.strip()
        if not item:
            raise ValueError(f"empty host in {shown!r}: name the nodes as host:port,host:port")
        try:
            parts = urlsplit("//" + item)
            port = parts.port or 6379
        except ValueError:
            raise ValueError(f"bad host:port {item!r} in {shown!r}") from None
        if not parts.hostname or parts.username is not None or parts.path:
            raise ValueError(f"bad host:port {item!r} in {shown!r}")
        nodes.append((parts.hostname, port))
    single = "rediss" if scheme.lower() == "rediss+cluster" else "redis"
    first = hosts.split(",")[0].strip()
    try:
        params = parse_url(f"{single}://{userinfo}{at}{first}/{path}{qmark}{query}", **overrides)
    except ValueError as e:  # said about the URL the user wrote, not the one made here
        raise ValueError(f"{str(e).split(' in ', 1)[0]} in {shown!r}") from None
    if params.db != 0:
        raise ValueError(f"a Redis Cluster has only db 0, not db {params.db}: {shown!r}")
    return nodes, params


def _redact(url, parts):
    """``url`` with its password (and any ``password=`` query value, and the value of any
    option we do not know: a misspelt ``sentinel_pasword=``) replaced by ``***``, for
    error messages."""
    if parts.query and "password" in parts.query.lower():
        url = re.sub(r"(?i)(password=)[^&#]*", r"\1***", url)
    url = _mask_unknown_options(url)
    if parts.password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return url.replace(parts.netloc, f"{user}:***@{hostport}", 1)


_FIELDS = frozenset(ConnectionParams.__dataclass_fields__)
_KNOWN_OPTIONS = frozenset(
    {"db", *_FLOAT_OPTIONS, *_STR_OPTIONS, *_BOOL_OPTIONS, *_ALIASES, *_SENTINEL_OPTIONS}
)
_QUERY_ITEM = re.compile(r"([?&])([^=&#]*)=([^&#]*)")


def _mask_unknown_options(url):
    """The value of every query option that is not one of ours masked: it may be a
    password under a misspelt name."""
    if "?" not in url:
        return url
    head, _, query = url.partition("?")

    def mask(m):
        return m.group(0) if unquote(m.group(2)) in _KNOWN_OPTIONS else f"{m.group(1)}{m.group(2)}=***"

    return head + _QUERY_ITEM.sub(mask, "?" + query)


def _int(name, text, url):
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"bad {name} {text!r} in {url!r}") from None


# -- masking secrets: the CLI and its logs show URLs without their passwords -------------

_URL_PASSWORD = re.compile(
    r"(?i)\b((?:redis|rediss|unix|https?|rediss?\+sentinel|redis\+cluster|rediss\+cluster)://[^:/@\s'\"]*:)[^\s'\"]*@"
)


_QUERY_PASSWORD = re.compile(r"(?i)([?&][^=&#\s'\"]*password=)[^&#\s'\"]*")


def redact_url(url: str) -> str:
    """``url`` with its password masked: ``redis://:***@host:6379/0``.

    The user name, host, port, path and query stay; a URL without a password is
    returned as it is. Text that does not parse is masked by pattern."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
    if parts.query and "password" in parts.query.lower():  # ?sentinel_password=
        url = re.sub(r"(?i)(password=)[^&#]*", r"\1***", url)
        parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def redact_text(text: str, secrets: "tuple[str, ...] | list[str]" = ()) -> str:
    """``text`` with the password of every URL in it masked, and every string of
    ``secrets`` replaced by ``***`` (those of 6 characters or more: a shorter one would
    mask ordinary words; it is still masked inside URLs)."""
    text = _URL_PASSWORD.sub(r"\1***@", text)
    text = _QUERY_PASSWORD.sub(r"\1***", text)  # ?sentinel_password=...
    for secret in sorted(secrets, key=len, reverse=True):
        if secret and len(secret) >= 6:
            text = text.replace(secret, "***")
    return text
