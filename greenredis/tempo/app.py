"""The Tempo Flask app: pages, a token endpoint and the one websocket endpoint.

Configuration (arguments of ``create_app`` win over the environment):

``REDIS_URL``          the Redis to read (default ``redis://127.0.0.1:6379/0``)
``TEMPO_PASSWORD``     when set, pages need HTTP basic auth with this password
                       (any user name) and websockets need a signed token
``TEMPO_SECRET_KEY``   signs the websocket tokens; share it between web processes.
                       Default: derived from the password with scrypt (N=2**16, r=8,
                       p=1, a fixed app salt; ~0.15 s once at startup), so every
                       process with the same password agrees and a leaked token
                       costs an attacker that much per password guess; without a
                       password, random per process
``TEMPO_HOSTS``        host names (``Host`` header; ``name`` or ``name:port``) the app
                       answers besides loopback (``127.0.0.1``, ``localhost``,
                       ``[::1]``, any port), comma separated; ``*`` allows any.
                       Checked, for pages and websockets, only when there is no
                       password (with one, basic auth and the signed token guard
                       them): a DNS-rebinding page controls both ``Host`` and
                       ``Origin``, so matching one against the other is not enough
``TEMPO_ORIGINS``      extra allowed websocket ``Origin`` values, comma separated
                       (the page's own origin is always allowed)
``TEMPO_TOKEN_TTL``    token lifetime in seconds (default 60)
``TEMPO_GRID``         ``0`` to not watch the grid (instances then come from stats only)
``TEMPO_QUEUE_SIZE``   messages queued per websocket before the oldest drop (256)
``TEMPO_QUEUE_BYTES``  bytes queued per websocket; past it the viewer is closed as slow (4 MiB)
``TEMPO_MAX_MESSAGE``  size cap of a websocket request in bytes (4096)
``TEMPO_SEND_TIMEOUT`` a websocket that cannot take one frame in this many seconds
                       is closed (30; a slow but reading viewer loses its oldest
                       messages instead)
``GRID_TTL``           grid timing shared with the instances (``greenredis demo``
``GRID_INTERVAL``      reads the same): a node is gone ``GRID_TTL`` seconds after
                       its last beat (default 30, interval 5); see
                       ``greenredis.grid_timing``

``TEMPO_MAX_METRICS``  metrics per instance sent in a history (default 1000; the
                       rest are counted in ``/healthz``'s ``metrics_capped``)
``TEMPO_HISTORY_BYTES`` cap of one history or backlog message in bytes (1 MiB)
``TEMPO_GONE_AFTER``   seconds a gone instance stays on the index (3600)

Every number must be positive (checked when the app is made: ``greenredis web`` exits 2).

Failed logins are rate-limited per client address (10, then one per 6 s; 429
with ``Retry-After``); a websocket token is good for one connection to the Host
it was issued for. The HTTP server's own limits are in ``greenredis.tempo.server``.

``/healthz`` always answers ``{"ok": true, "redis": bool, "live": bool}`` (for
platform health checks; ``live`` is false while Redis refuses the pub/sub feed);
the reason (``live_error``), viewer and channel counts only with the password
(or, without one, from an allowed host).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

from flask import Blueprint, Flask, Response, abort, current_app, jsonify, render_template, request, url_for

from greenredis.client.redis import Redis
from greenredis.grid.timing import grid_timing
from greenredis.tempo.guard import LOOPBACK, WS_SALT, Guard, host_allowed
from greenredis.tempo.hub import check_instance
from greenredis.tempo.live import Live
from greenredis.tempo.registry import Registry

__all__ = ["create_app", "TempoConfig", "bp", "LOOPBACK", "WS_SALT", "host_allowed"]

log = logging.getLogger("greenredis.tempo")


@functools.lru_cache(maxsize=8)
def secret_from_password(password: str) -> str:
    """The token signing key derived from the password: scrypt, so that a leaked
    token makes each offline password guess cost ~0.15 s and 64 MiB. The salt is
    fixed (not random) so every web process derives the same key."""
    return hashlib.scrypt(
        password.encode(),
        salt=b"greenredis.tempo.token-key.v1",
        n=2**16,
        r=8,
        p=1,
        maxmem=128 << 20,
        dklen=32,
    ).hex()


def _split(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


@dataclass(frozen=True, slots=True)
class TempoConfig:
    """Tempo's settings; ``from_env`` reads them (see the module docstring)."""

    redis_url: str = "redis://127.0.0.1:6379/0"
    password: str | None = None
    secret_key: str = ""
    origins: frozenset[str] = frozenset()
    hosts: frozenset[str] = frozenset()
    token_ttl: float = 60.0
    join_grid: bool = True
    queue_size: int = 256
    queue_bytes: int = 4 << 20
    max_message: int = 4096
    max_metrics: int = 1000
    history_bytes: int = 1 << 20
    send_timeout: float = 30.0
    gone_after: float = 3600.0
    grid_ttl: float = 30.0
    grid_interval: float = 5.0
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **given: Any) -> TempoConfig:
        """The settings from ``env`` (default ``os.environ``); ``given`` values that
        are not None win (``password=""``: explicitly none)."""
        env = os.environ if env is None else env
        password = given.pop("password", None)
        password = (env.get("TEMPO_PASSWORD") or None) if password is None else (password or None)
        secret_key = given.pop("secret_key", None) or env.get("TEMPO_SECRET_KEY") or env.get("SECRET_KEY")
        if not secret_key:
            secret_key = secret_from_password(password) if password else os.urandom(32).hex()
        origins = given.pop("origins", None)
        origins = _split(env.get("TEMPO_ORIGINS", "")) if origins is None else origins
        hosts = given.pop("hosts", None)
        hosts = _split(env.get("TEMPO_HOSTS", "")) if hosts is None else hosts
        join_grid = given.pop("join_grid", None)
        if join_grid is None:
            join_grid = env.get("TEMPO_GRID", "1") not in ("0", "false", "no", "")
        grid_ttl, grid_interval = grid_timing(env)

        def num(kind: Callable[[Any], Any], name: str, var: str, default: Any, finite: bool = True) -> Any:
            """A positive number: 0, negative, NaN (and infinity where ``finite``) are refused
            here, not at the first request (a NaN token TTL raised at every token check)."""
            value = given.pop(name, None)
            if value is None:
                value = env.get(var) or default
            try:
                number = kind(value)
            except (TypeError, ValueError, OverflowError):
                number = None
            if number is None or not number > 0 or (finite and not math.isfinite(number)):
                what = "integer" if kind is int else "number"
                raise ValueError(f"{var} must be a positive {what}, not {value!r}")
            return number

        d = cls()
        # infinite: a stuck viewer is never closed (it holds a greenlet and a socket)
        send_timeout = num(float, "send_timeout", "TEMPO_SEND_TIMEOUT", d.send_timeout, finite=False)
        return cls(
            redis_url=env.get("REDIS_URL") or d.redis_url,
            password=password,
            secret_key=secret_key,
            origins=frozenset(o.lower().rstrip("/") for o in origins),
            hosts=frozenset(h.lower().rstrip(".") for h in hosts),
            token_ttl=num(float, "token_ttl", "TEMPO_TOKEN_TTL", d.token_ttl),
            join_grid=bool(join_grid),
            queue_size=num(int, "queue_size", "TEMPO_QUEUE_SIZE", d.queue_size),
            queue_bytes=num(int, "queue_bytes", "TEMPO_QUEUE_BYTES", d.queue_bytes),
            max_message=num(int, "max_message", "TEMPO_MAX_MESSAGE", d.max_message),
            max_metrics=num(int, "max_metrics", "TEMPO_MAX_METRICS", d.max_metrics),
            history_bytes=num(int, "history_bytes", "TEMPO_HISTORY_BYTES", d.history_bytes),
            send_timeout=send_timeout,
            gone_after=num(float, "gone_after", "TEMPO_GONE_AFTER", d.gone_after),
            grid_ttl=grid_ttl,
            grid_interval=grid_interval,
            extra={k: v for k, v in given.items() if v is not None},
        )


class _Tempo:
    """What the Blueprint's views need: the config, the guard and the lazy ``Live``."""

    def __init__(self, config: TempoConfig, redis: Any = None, grid: Any = None) -> None:
        self.config = config
        self.guard = Guard(config.password, config.secret_key, config.hosts, config.origins, config.token_ttl)
        self._redis = redis
        self._grid = grid
        self._live: Live | None = None
        self._warned: set[str] = set()

    def live(self) -> Live:
        if self._live is None:
            cfg = self.config
            r = (  # a client (Redis or Cluster) as given, else one made from the URL
                self._redis
                if self._redis is not None and not isinstance(self._redis, str)
                else Redis.from_url(self._redis or cfg.redis_url)
            )
            g = self._grid
            if g is None and cfg.join_grid:
                from greenredis.grid.node import Grid

                # watch the grid without joining it, timed like the instances
                g = Grid(r, observe=True, ttl=cfg.grid_ttl, interval=cfg.grid_interval).start()
            self._live = Live(
                r,
                Registry(r, g, gone_after=cfg.gone_after),
                queue_size=cfg.queue_size,
                max_message=cfg.max_message,
                queue_bytes=cfg.queue_bytes,
                max_metrics=cfg.max_metrics,
                history_bytes=cfg.history_bytes,
                send_timeout=cfg.send_timeout,
            )
        return self._live.start()

    def shutdown(self) -> None:
        """Close every websocket with 1001 (going away), if any were served."""
        if self._live is not None:
            self._live.close_all()

    def foreign_host(self, host: str) -> str:
        host = host[:200]
        if host not in self._warned and len(self._warned) < 100:
            self._warned.add(host)
            log.warning(
                "tempo: refusing Host %r: not loopback nor in TEMPO_HOSTS (set TEMPO_HOSTS=%s to serve it)",
                host,
                host.rsplit(":", 1)[0],
            )
        return f"Host {host!r} is not allowed: add it to TEMPO_HOSTS"


bp = Blueprint("tempo", __name__)


def _tempo() -> _Tempo:
    return current_app.extensions["tempo_app"]


def _given_password() -> str | None:
    auth = request.authorization
    if auth is None or auth.type != "basic":
        return None
    return auth.password or ""


def _trusted() -> bool:
    """Whether this request may see more than the public bits (healthz counts)."""
    t = _tempo()
    if t.config.password:
        return t.guard.login(request.remote_addr or "", _given_password()).ok
    return t.guard.host_ok(request.host)


@bp.before_app_request
def _basic_auth() -> Response | None:
    if request.endpoint in ("tempo.websocket", "tempo.healthz"):
        return None
    t = _tempo()
    if not t.config.password:
        if t.guard.host_ok(request.host):
            return None
        return Response(t.foreign_host(request.host) + "\n", 403, mimetype="text/plain")
    verdict = t.guard.login(request.remote_addr or "", _given_password())
    if verdict.ok:
        return None
    if verdict.status == 429:
        return Response(
            "Too many failed logins; retry later.\n",
            429,
            {"Retry-After": str(verdict.retry_after)},
            mimetype="text/plain",
        )
    return Response(
        "Tempo needs a password.\n",
        401,
        {"WWW-Authenticate": 'Basic realm="Tempo", charset="UTF-8"'},
        mimetype="text/plain",
    )


@bp.after_app_request
def _security_headers(resp: Response) -> Response:
    https = request.is_secure or request.headers.get("X-Forwarded-Proto", "").lower() == "https"
    for name, value in _tempo().guard.headers(https).items():
        resp.headers.setdefault(name, value)
    return resp


def _instance_or_404(name: str) -> str:
    if not _valid_instance(name) or not _tempo().live().registry.is_known(name):
        abort(404)
    return name


def _page_config(**extra: Any) -> dict[str, Any]:
    t = _tempo()
    lv = t.live()
    # url_for makes a ws:// URL for a websocket rule; the page adds its own host
    return {
        "ws": urlsplit(url_for("tempo.websocket")).path,
        "token": t.guard.issue_token(request.host),
        "tokenUrl": url_for("tempo.token"),
        "auth": bool(t.config.password),
        "live": lv.feed_ok(),
        "liveError": lv.feed_error,
        **extra,
    }


@bp.route("/")
def index() -> str:
    snap = _tempo().live().registry.snapshot()
    return render_template("index.html", snap=snap, cfg=_page_config(page="index"), valid=_valid_instance)


@bp.route("/instances/<name>")
def instance(name: str) -> str:
    _instance_or_404(name)
    node = next((n for n in _tempo().live().registry.snapshot()["nodes"] if n["name"] == name), None)
    return render_template(
        "instance.html", name=name, node=node, cfg=_page_config(page="instance", instance=name)
    )


@bp.route("/instances/<name>/logs")
def logs(name: str) -> str:
    _instance_or_404(name)
    return render_template("logs.html", name=name, cfg=_page_config(page="logs", instance=name))


@bp.route("/token")
def token() -> Response:
    """A fresh websocket token (pages fetch one before every reconnect)."""
    t = _tempo()
    return jsonify(token=t.guard.issue_token(request.host), expires_in=t.config.token_ttl)


@bp.route("/api/instances")
def api_instances() -> Response:
    return jsonify(_tempo().live().registry.snapshot())


@bp.route("/healthz")
def healthz() -> Response:
    lv = _tempo().live()
    status: dict[str, Any] = {"ok": True, "redis": lv.registry.snapshot()["redis"], "live": lv.feed_ok()}
    if _trusted():
        status.update(
            viewers=len(lv.hub.viewers),
            channels=sorted(lv.subscribed()),
            live_error=lv.feed_error,
            refused=sorted(lv.refused),
            metrics_capped=lv.hub.stats["metrics_capped"],
        )
    return jsonify(status)


@bp.route("/ws", websocket=True)
def websocket() -> Response:
    sock = request.environ.get("wsgi.websocket")
    if sock is None:
        abort(400, "needs a websocket-capable server (gevent-websocket)")
    t = _tempo()
    lv = t.live()
    problem = t.guard.websocket_problem(
        request.host, request.headers.get("Origin"), request.args.get("token")
    )
    if problem:
        if problem.startswith("Host "):
            problem = t.foreign_host(request.host)
        lv.reject(sock, "forbidden", problem)
    else:
        lv.serve(sock)
    return Response(status=101)


def create_app(
    redis: Any = None,
    grid: Any = None,
    password: str | None = None,
    secret_key: str | None = None,
    origins: list[str] | None = None,
    token_ttl: float | None = None,
    join_grid: bool | None = None,
    queue_size: int | None = None,
    max_message: int | None = None,
    hosts: list[str] | None = None,
    queue_bytes: int | None = None,
    config: TempoConfig | None = None,
    **flask_config: Any,
) -> Flask:
    """The Tempo app. ``redis``: a ``greenredis.Redis`` or URL (default ``$REDIS_URL``);
    ``grid``: a started ``greenredis.Grid`` to show (default: an observing Grid on
    ``redis``, started on the first request); ``config``: a ``TempoConfig`` (default:
    ``TempoConfig.from_env`` with the other arguments). The Redis client, grid and
    subscription start lazily, so creating the app does no I/O."""
    if config is None:
        config = TempoConfig.from_env(
            password=password,
            secret_key=secret_key,
            origins=origins,
            token_ttl=token_ttl,
            join_grid=join_grid,
            queue_size=queue_size,
            max_message=max_message,
            hosts=hosts,
            queue_bytes=queue_bytes,
        )
    if isinstance(redis, str):
        config = replace(config, redis_url=redis)
        redis = None
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=config.secret_key,
        TEMPO_PASSWORD=config.password,
        TEMPO_ORIGINS=config.origins,
        TEMPO_HOSTS=config.hosts,
        TEMPO_TOKEN_TTL=config.token_ttl,
        **config.extra,
        **flask_config,
    )
    tempo = _Tempo(config, redis, grid)
    app.extensions["tempo_app"] = tempo
    app.extensions["tempo"] = tempo.live  # calling it starts (and returns) the Live
    app.extensions["tempo_shutdown"] = tempo.shutdown  # greenlet-safe; the server calls it on stop
    app.register_blueprint(bp)
    app.register_error_handler(404, _not_found)
    return app


def _not_found(_e: Exception) -> tuple[str, int]:
    """The styled 404 page, with the header and a way back (any unknown URL)."""
    name = (request.view_args or {}).get("name")
    # a valid name that may join later: the page opens itself when it does
    wait_for = name if name is not None and _valid_instance(name) else None
    return render_template("404.html", name=name, cfg=_page_config(page="404", waitFor=wait_for)), 404


def _valid_instance(name: str) -> bool:
    try:
        check_instance(name)
        return True
    except ValueError:
        return False
