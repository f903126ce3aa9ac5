"""Serve the Tempo dashboard: gevent's WSGIServer with gevent-websocket's handler.

Reads Redis from ``$REDIS_URL``. ``--app module:attr`` serves another WSGI app
(the Procfile passes ``app:app``). SIGTERM (what Heroku and honcho send) stops
accepting, closes the websockets (pages reconnect to the next process) and
exits; SIGINT too. A bad URL, a wrong password, a port that is not Redis, a port in
use or a bad ``--app`` stop it with one line; a Redis that does not answer yet
does not: the pages say Redis is down until it does.
"""

import errno
import importlib
import logging
import os
import sys

from greenredis.cli.failures import Fatal, check_url, probe
from greenredis.url import DEFAULT_URL, redact_url

log = logging.getLogger("greenredis.web")


def add_arguments(parser):
    parser.add_argument(
        "--host",
        default=os.environ.get("HOST", "127.0.0.1"),
        help="address to bind (default $HOST or 127.0.0.1; 0.0.0.0 on a PaaS)",
    )
    parser.add_argument("--port", default=None, help="port (default $PORT or 5000)")
    parser.add_argument(
        "--app", default=None, help="WSGI app as module:attribute (default: greenredis.tempo.create_app())"
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=10000,
        help="concurrent connections (websockets included); more wait (default 10000)",
    )
    parser.add_argument("--no-access-log", action="store_true", help="do not log each request")


def parse_port(text, what="--port"):
    """A TCP port from text (``$PORT`` or ``--port``), or a ``Fatal`` saying why not."""
    try:
        port = int(str(text).strip())
    except ValueError:
        raise Fatal(f"{what}={text!r} is not a port number", "a number from 1 to 65535", code=2) from None
    if not 0 <= port <= 65535:
        raise Fatal(f"{what}={port} is not in 0-65535", "a number from 1 to 65535 (0: any free port)", code=2)
    return port


def load_app(spec):
    if spec is None:
        from greenredis.tempo import create_app

        try:
            return create_app()
        except ValueError as e:  # a TEMPO_* setting that is not a number (create_app does no I/O)
            raise Fatal(str(e), "see the settings in greenredis.tempo.app's docstring", code=2) from None
    module, _, attr = spec.partition(":")
    attr = attr or "app"
    call = attr.endswith("()")  # "pkg.mod:factory()" calls the factory
    hint = "--app module:attribute, e.g. app:app, run from the folder that holds app.py"
    if not module:
        raise Fatal(f"bad --app {spec!r}: no module", hint, code=2)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name):
            raise Fatal(
                f"bad --app {spec!r}: no module named {e.name!r} (in {os.getcwd()})", hint, code=2
            ) from None
        raise Fatal(f"--app {spec!r}: importing {module!r} failed: {e}", None, code=2) from None
    except Fatal:
        raise
    except Exception as e:
        raise Fatal(
            f"--app {spec!r}: importing {module!r} failed: {type(e).__name__}: {e}",
            "run with --log-level debug for the traceback",
        ) from e
    try:
        obj = getattr(mod, attr[:-2] if call else attr)
    except AttributeError:
        raise Fatal(
            f"bad --app {spec!r}: module {module!r} has no attribute {attr!r}", hint, code=2
        ) from None
    obj = obj() if call else obj
    if not callable(obj):
        raise Fatal(
            f"bad --app {spec!r}: {type(obj).__name__} is not a WSGI app (not callable)", hint, code=2
        )
    return obj


def make_server(app, host, port, max_connections=10000, access_log=True):
    """A Tempo server that upgrades websocket requests (not started); see greenredis.tempo.server."""
    from greenredis.tempo.server import ServerLimits, make_server

    try:
        limits = ServerLimits.from_env()
    except ValueError as e:  # a TEMPO_* server limit that is no number, or out of range
        raise Fatal(str(e), "see the limits in greenredis.tempo.server's docstring", code=2) from None
    return make_server(app, host, port, max_connections, access_log, limits)


def bind_error(exc, host, port):
    """The ``Fatal`` for a port we cannot listen on."""
    if exc.errno == errno.EADDRINUSE:
        return Fatal(
            f"port {port} on {host} is in use by another process",
            "stop it, or pick another: --port N (or PORT=N)",
        )
    if exc.errno == errno.EACCES:
        return Fatal(f"may not listen on port {port} (permission denied)", "use a port above 1023")
    if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or isinstance(exc, OSError):
        return Fatal(f"cannot listen on {host}:{port}: {exc.strerror or exc}", "--host 127.0.0.1 or 0.0.0.0")
    return Fatal(str(exc))


def open_url(host, port):
    """A URL a person can open for a server bound to ``host``."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "", "::") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def check_redis(url, timeout=5.0):
    """Stop on what needs a fix (a bad URL, a wrong password, not Redis); only warn when
    Redis does not answer (yet): the pages say so and the app reconnects."""
    check_url(url)
    try:
        probe(url, timeout)
    except Fatal as e:
        if not e.transient:
            raise
        log.warning("%s; serving anyway: the pages show Redis as down until it answers", e.message)


def run(args):
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        monkey.patch_all()
    import gevent.event

    port = parse_port(
        args.port if args.port is not None else os.environ.get("PORT", "5000"),
        "--port" if args.port is not None else "PORT",
    )
    url = os.environ.get("REDIS_URL") or DEFAULT_URL
    if args.app in (None, "app:app"):  # Tempo: its Redis must be right
        check_redis(url)
    app = load_app(args.app)
    server = make_server(app, args.host, port, args.max_connections, not args.no_access_log)
    try:
        server.init_socket()
    except OSError as e:
        raise bind_error(e, args.host, port) from None
    server.start()
    where = f" (listening on {args.host}:{server.server_port})" if args.host in ("0.0.0.0", "", "::") else ""
    log.info("serving on %s%s; redis %s", open_url(args.host, server.server_port), where, redact_url(url))
    try:
        gevent.event.Event().wait()  # until SIGTERM / Ctrl-C (greenredis.cli.lifecycle)
    finally:
        log.info("stopping")
        server.stop(timeout=5)
    return 0
