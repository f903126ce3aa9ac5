"""Where and how to connect: ``ConnectionParams`` and ``parse_url``."""

import os
import re
from dataclasses import dataclass, field, replace
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

__all__ = [
    "ConnectionParams",
    "parse_url",
    "parse_cluster_url",
    "is_cluster_url",
    "DEFAULT_URL",
    "redact_url",
    "redact_text",
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
    if scheme in _CLUSTER_SCHEMES:
        raise ValueError(
            f"{url!r} names a Redis Cluster: use greenredis.Cluster.from_url (Redis.from_url gives one too)"
        )
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(
            f"unsupported URL scheme {parts.scheme!r} in {url!r}: use redis://, rediss:// or unix://"
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
    for name, values in parse_qs(parts.query).items():
        value = values[-1]
        name = _ALIASES.get(name, name)
        if name == "db":
            kw["db"] = _int("db", value, url)
        elif name in _FLOAT_OPTIONS:
            try:
                kw[name] = float(value)
            except ValueError:
                raise ValueError(f"bad {name} {value!r} in {url!r}: a number of seconds") from None
        elif name in _STR_OPTIONS:
            kw[name] = value
        elif name in _BOOL_OPTIONS:
            if value.lower() not in _TRUE | _FALSE:
                raise ValueError(f"bad {name} {value!r} in {url!r}: true or false")
            kw[name] = value.lower() in _TRUE
        else:
            raise ValueError(f"unknown URL option {name!r} in {url!r}")
    for name, value in overrides.items():
        field = _ALIASES.get(name, name)
        if field not in _FIELDS:
            raise TypeError(f"unknown option {name!r}")
        if value is not None:
            kw[field] = value
    return ConnectionParams(**kw)


_CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")


def is_cluster_url(url):
    """True for ``redis+cluster://`` and ``rediss+cluster://`` URLs."""
    return isinstance(url, str) and url.partition("://")[0].lower() in _CLUSTER_SCHEMES


def parse_cluster_url(url, **overrides):
    """Parse ``redis+cluster://[[user]:password@]host:port[,host:port...][?options]``
    (``rediss+cluster://`` for TLS): returns ``([(host, port), ...], ConnectionParams)``,
    the params being those every node shares (options as for ``parse_url``). A cluster
    has only db 0: any other db is a ValueError."""
    shown = redact_text(url) if isinstance(url, str) else url
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
    """``url`` with its password (and any ``password=`` query value) replaced by ``***``,
    for error messages."""
    if parts.query and "password" in parts.query.lower():
        url = re.sub(r"(?i)(password=)[^&#]*", r"\1***", url)
    if parts.password is None:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return url.replace(parts.netloc, f"{user}:***@{hostport}", 1)


_FIELDS = frozenset(ConnectionParams.__dataclass_fields__)


def _int(name, text, url):
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"bad {name} {text!r} in {url!r}") from None


# -- masking secrets: the CLI and its logs show URLs without their passwords -------------

_URL_PASSWORD = re.compile(
    r"(?i)\b((?:redis|rediss|unix|https?|redis\+cluster|rediss\+cluster)://[^:/@\s'\"]*:)[^\s'\"]*@"
)


def redact_url(url: str) -> str:
    """``url`` with its password masked: ``redis://:***@host:6379/0``.

    The user name, host, port, path and query stay; a URL without a password is
    returned as it is. Text that does not parse is masked by pattern."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_text(url)
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
    for secret in sorted(secrets, key=len, reverse=True):
        if secret and len(secret) >= 6:
            text = text.replace(secret, "***")
    return text
