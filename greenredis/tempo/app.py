"""The Tempo Flask app: pages, a token endpoint and the one websocket endpoint.

Configuration (arguments of ``create_app`` win over the environment):

``REDIS_URL``          the Redis to read (default ``redis://127.0.0.1:6379/0``)
``TEMPO_PASSWORD``     when set, pages need HTTP basic auth with this password
                       (any user name) and websockets need a signed token
``TEMPO_SECRET_KEY``   signs the websocket tokens; share it between web processes.
                       Default: derived from the password, else random per process
``TEMPO_ORIGINS``      extra allowed websocket ``Origin`` values, comma separated
                       (the page's own origin is always allowed)
``TEMPO_TOKEN_TTL``    token lifetime in seconds (default 60)
``TEMPO_GRID``         ``0`` to not watch the grid (instances then come from stats only)
``TEMPO_QUEUE_SIZE``   messages queued per websocket before the oldest drop (256)
``TEMPO_MAX_MESSAGE``  size cap of a websocket request in bytes (4096)
"""

import hashlib
import hmac
import os
import time
from urllib.parse import urlsplit

from flask import Flask, Response, abort, jsonify, render_template, request, url_for
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from .. import channels
from ..client import Redis
from .live import Live
from .registry import Registry

__all__ = ["create_app"]

WS_SALT = "greenredis.tempo.websocket"


def _instance_or_404(live, name):
    try:
        channels.check_instance(name)
    except ValueError:
        abort(404)
    if not live.registry.is_known(name):
        abort(404)
    return name


def create_app(redis=None, grid=None, password=None, secret_key=None, origins=None,
               token_ttl=None, join_grid=None, queue_size=None, max_message=None, **config):
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
        secret_key = (hashlib.sha256(b"greenredis.tempo:" + password.encode()).hexdigest()
                      if password else os.urandom(32).hex())
    if origins is None:
        origins = [o.strip() for o in env.get("TEMPO_ORIGINS", "").split(",") if o.strip()]
    queue_size = int(queue_size or env.get("TEMPO_QUEUE_SIZE") or 256)
    max_message = int(max_message or env.get("TEMPO_MAX_MESSAGE") or 4096)
    if join_grid is None:
        join_grid = env.get("TEMPO_GRID", "1") not in ("0", "false", "no", "")
    app.config.update(
        SECRET_KEY=secret_key,
        TEMPO_PASSWORD=password,
        TEMPO_ORIGINS={o.lower().rstrip("/") for o in origins},
        TEMPO_TOKEN_TTL=float(token_ttl or env.get("TEMPO_TOKEN_TTL") or 60),
        **config,
    )
    state = {"live": None}

    def live():
        if state["live"] is None:
            r = redis if isinstance(redis, Redis) else Redis.from_url(
                redis or env.get("REDIS_URL") or "redis://127.0.0.1:6379/0")
            g = grid
            if g is None and join_grid:
                from ..grid import Grid
                g = Grid(r, observe=True).start()   # watch the grid without joining it
            state["live"] = Live(r, Registry(r, g), queue_size=queue_size,
                                 max_message=max_message)
        return state["live"].start()

    app.extensions["tempo"] = live
    signer = URLSafeTimedSerializer(secret_key, salt=WS_SALT)

    def make_token():
        return signer.dumps({"t": int(time.time())})

    @app.before_request
    def basic_auth():
        if not password or request.endpoint in ("websocket", "healthz"):
            return None
        auth = request.authorization
        given = (auth.password or "") if auth is not None and auth.type == "basic" else ""
        if hmac.compare_digest(given.encode(), password.encode()):
            return None
        return Response("Tempo needs a password.\n", 401,
                        {"WWW-Authenticate": 'Basic realm="Tempo", charset="UTF-8"'},
                        mimetype="text/plain")

    @app.after_request
    def security_headers(resp):
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
            "style-src 'self'; script-src 'self'; frame-ancestors 'none'")
        return resp

    def page_config(**extra):
        # url_for makes a ws:// URL for a websocket rule; the page adds its own host
        return {"ws": urlsplit(url_for("websocket")).path, "token": make_token() if password else None,
                "tokenUrl": url_for("token"), "auth": bool(password), **extra}

    @app.route("/")
    def index():
        snap = live().registry.snapshot()
        return render_template("index.html", snap=snap, cfg=page_config(page="index"),
                               valid=_valid_instance)

    @app.route("/instances/<name>")
    def instance(name):
        lv = live()
        _instance_or_404(lv, name)
        node = next((n for n in lv.registry.snapshot()["nodes"] if n["name"] == name), None)
        return render_template("instance.html", name=name, node=node,
                               cfg=page_config(page="instance", instance=name))

    @app.route("/instances/<name>/logs")
    def logs(name):
        lv = live()
        _instance_or_404(lv, name)
        return render_template("logs.html", name=name,
                               cfg=page_config(page="logs", instance=name))

    @app.route("/token")
    def token():
        """A fresh websocket token (pages fetch one before every reconnect)."""
        return jsonify(token=make_token() if password else None,
                       expires_in=app.config["TEMPO_TOKEN_TTL"])

    @app.route("/api/instances")
    def api_instances():
        return jsonify(live().registry.snapshot())

    @app.route("/healthz")
    def healthz():
        lv = live()
        return jsonify(ok=True, redis=lv.registry.snapshot()["redis"],
                       viewers=len(lv.hub.viewers), channels=sorted(lv.subscribed()))

    def origin_ok(origin):
        origin = origin.lower().rstrip("/")
        if origin in app.config["TEMPO_ORIGINS"]:
            return True
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc == request.host.lower()

    def ws_problem():
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
        channels.check_instance(name)
        return True
    except ValueError:
        return False
