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
``TEMPO_QUEUE_BYTES``  bytes queued per websocket before the oldest drop (4 MiB)
``TEMPO_MAX_MESSAGE``  size cap of a websocket request in bytes (4096)
``GRID_TTL``           grid timing shared with the instances (``greenredis demo``
``GRID_INTERVAL``      reads the same): a node is gone ``GRID_TTL`` seconds after
                       its last beat (default 30, interval 5); see
                       ``greenredis.grid_timing``

``/healthz`` always answers ``{"ok": true, "redis": bool}`` (for platform health
checks); viewer and channel counts only with the password (or, without one, from
an allowed host).
"""

import functools
import hashlib
import hmac
import logging
import os
import time
from urllib.parse import urlsplit

from flask import Flask, Response, abort, jsonify, render_template, request, url_for
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from greenredis.client.redis import Redis
from greenredis.grid.timing import grid_timing
from greenredis.telemetry import names
from greenredis.tempo.live import Live
from greenredis.tempo.registry import Registry

__all__ = ["create_app"]

WS_SALT = "greenredis.tempo.websocket"
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})

log = logging.getLogger("greenredis.tempo")


@functools.lru_cache(maxsize=8)
def secret_from_password(password):
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


def host_allowed(host, allowed):
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


def _instance_or_404(live, name):
    try:
        names.check_instance(name)
    except ValueError:
        abort(404)
    if not live.registry.is_known(name):
        abort(404)
    return name


def create_app(
    redis=None,
    grid=None,
    password=None,
    secret_key=None,
    origins=None,
    token_ttl=None,
    join_grid=None,
    queue_size=None,
    max_message=None,
    hosts=None,
    queue_bytes=None,
    **config,
):
    """The Tempo app. ``redis``: a ``greenredis.Redis`` or URL (default ``$REDIS_URL``);
    ``grid``: a started ``greenredis.Grid`` to show (default: an observing Grid on
    ``redis``, started on the first request). The Redis client,
    grid and subscription start lazily, so creating the app does no I/O."""
    app = Flask(__name__)
    env = os.environ
    password = env.get("TEMPO_PASSWORD") or None if password is None else password or None
    if secret_key is None:
        secret_key = env.get("TEMPO_SECRET_KEY") or env.get("SECRET_KEY")
    if not secret_key:
        secret_key = secret_from_password(password) if password else os.urandom(32).hex()
    if origins is None:
        origins = [o.strip() for o in env.get("TEMPO_ORIGINS", "").split(",") if o.strip()]
    if hosts is None:
        hosts = [h.strip() for h in env.get("TEMPO_HOSTS", "").split(",") if h.strip()]
    hosts = frozenset(h.lower().rstrip(".") for h in hosts)
    grid_ttl, grid_interval = grid_timing(env)
    queue_size = int(queue_size or env.get("TEMPO_QUEUE_SIZE") or 256)
    queue_bytes = int(queue_bytes or env.get("TEMPO_QUEUE_BYTES") or 4 << 20)
    max_message = int(max_message or env.get("TEMPO_MAX_MESSAGE") or 4096)
    if join_grid is None:
        join_grid = env.get("TEMPO_GRID", "1") not in ("0", "false", "no", "")
    app.config.update(
        SECRET_KEY=secret_key,
        TEMPO_PASSWORD=password,
        TEMPO_ORIGINS={o.lower().rstrip("/") for o in origins},
        TEMPO_HOSTS=hosts,
        TEMPO_TOKEN_TTL=float(token_ttl or env.get("TEMPO_TOKEN_TTL") or 60),
        **config,
    )
    state = {"live": None}

    def live():
        if state["live"] is None:
            r = (
                redis
                if isinstance(redis, Redis)
                else Redis.from_url(redis or env.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
            )
            g = grid
            if g is None and join_grid:
                from greenredis.grid.node import Grid

                # watch the grid without joining it, timed like the instances
                g = Grid(r, observe=True, ttl=grid_ttl, interval=grid_interval).start()
            state["live"] = Live(
                r, Registry(r, g), queue_size=queue_size, max_message=max_message, queue_bytes=queue_bytes
            )
        return state["live"].start()

    app.extensions["tempo"] = live
    signer = URLSafeTimedSerializer(secret_key, salt=WS_SALT)

    def make_token():
        return signer.dumps({"t": int(time.time())})

    def host_ok():
        return host_allowed(request.host, hosts)

    def password_ok():
        auth = request.authorization
        given = (auth.password or "") if auth is not None and auth.type == "basic" else ""
        return hmac.compare_digest(given.encode(), password.encode())

    warned = set()

    def foreign_host():
        host = request.host[:200]
        if host not in warned and len(warned) < 100:
            warned.add(host)
            log.warning(
                "tempo: refusing Host %r: not loopback nor in TEMPO_HOSTS (set TEMPO_HOSTS=%s to serve it)",
                host,
                host.rsplit(":", 1)[0],
            )
        return f"Host {host!r} is not allowed: add it to TEMPO_HOSTS"

    @app.before_request
    def basic_auth():
        if request.endpoint in ("websocket", "healthz"):
            return None
        if not password:
            if host_ok():
                return None
            return Response(foreign_host() + "\n", 403, mimetype="text/plain")
        if password_ok():
            return None
        return Response(
            "Tempo needs a password.\n",
            401,
            {"WWW-Authenticate": 'Basic realm="Tempo", charset="UTF-8"'},
            mimetype="text/plain",
        )

    @app.after_request
    def security_headers(resp):
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
            "style-src 'self'; script-src 'self'; frame-ancestors 'none'",
        )
        return resp

    def page_config(**extra):
        # url_for makes a ws:// URL for a websocket rule; the page adds its own host
        return {
            "ws": urlsplit(url_for("websocket")).path,
            "token": make_token() if password else None,
            "tokenUrl": url_for("token"),
            "auth": bool(password),
            **extra,
        }

    @app.route("/")
    def index():
        snap = live().registry.snapshot()
        return render_template("index.html", snap=snap, cfg=page_config(page="index"), valid=_valid_instance)

    @app.route("/instances/<name>")
    def instance(name):
        lv = live()
        _instance_or_404(lv, name)
        node = next((n for n in lv.registry.snapshot()["nodes"] if n["name"] == name), None)
        return render_template(
            "instance.html", name=name, node=node, cfg=page_config(page="instance", instance=name)
        )

    @app.route("/instances/<name>/logs")
    def logs(name):
        lv = live()
        _instance_or_404(lv, name)
        return render_template("logs.html", name=name, cfg=page_config(page="logs", instance=name))

    @app.route("/token")
    def token():
        """A fresh websocket token (pages fetch one before every reconnect)."""
        return jsonify(token=make_token() if password else None, expires_in=app.config["TEMPO_TOKEN_TTL"])

    @app.route("/api/instances")
    def api_instances():
        return jsonify(live().registry.snapshot())

    @app.route("/healthz")
    def healthz():
        lv = live()
        status = {"ok": True, "redis": lv.registry.snapshot()["redis"]}
        if password_ok() if password else host_ok():
            status.update(viewers=len(lv.hub.viewers), channels=sorted(lv.subscribed()))
        return jsonify(status)

    @app.errorhandler(404)
    def not_found(_e):
        name = (request.view_args or {}).get("name")
        # a valid name that may join later: the page opens itself when it does
        wait_for = name if name is not None and _valid_instance(name) else None
        return render_template("404.html", name=name, cfg=page_config(page="404", waitFor=wait_for)), 404

    def origin_ok(origin):
        origin = origin.lower().rstrip("/")
        if origin in app.config["TEMPO_ORIGINS"]:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc == request.host.lower()

    def ws_problem():
        # With a password the signed token (only handed out behind basic auth) and the
        # Origin check stop cross-site and rebinding pages; without one, the Host must be ours.
        if not password and not host_ok():
            return foreign_host()
        origin = request.headers.get("Origin")
        if origin is not None and not origin_ok(origin):
            return "foreign Origin"
        if password:
            tok = request.args.get("token")
            if not tok:
                return "token required"
            try:
                signer.loads(tok, max_age=app.config["TEMPO_TOKEN_TTL"])
            except SignatureExpired:
                return "token expired"
            except BadSignature:
                return "bad token"
        return None

    @app.route("/ws", websocket=True)
    def websocket():
        sock = request.environ.get("wsgi.websocket")
        if sock is None:
            abort(400, "needs a websocket-capable server (gevent-websocket)")
        lv = live()
        problem = ws_problem()
        if problem:
            lv.reject(sock, "forbidden", problem)
        else:
            lv.serve(sock)
        return Response(status=101)

    return app


def _valid_instance(name):
    try:
        names.check_instance(name)
        return True
    except ValueError:
        return False
