"""Serve the Tempo dashboard: gevent's WSGIServer with gevent-websocket's handler.

Reads Redis from ``$REDIS_URL``. ``--app module:attr`` serves another WSGI app
(the Procfile passes ``app:app``). SIGTERM (what Heroku and honcho send) stops
accepting, closes the websockets (pages reconnect to the next process) and
exits; SIGINT too.
"""

import importlib
import logging
import os
import signal
import sys


def add_arguments(parser):
    parser.add_argument(
        "--host",
        default=os.environ.get("HOST", "127.0.0.1"),
        help="address to bind (default $HOST or 127.0.0.1; 0.0.0.0 on a PaaS)",
    )
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("PORT", 5000)), help="port (default $PORT or 5000)"
    )
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


def load_app(spec):
    if spec is None:
        from greenredis.tempo import create_app

        return create_app()
    module, _, attr = spec.partition(":")
    attr = attr or "app"
    call = attr.endswith("()")  # "pkg.mod:factory()" calls the factory
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    obj = getattr(importlib.import_module(module), attr[:-2] if call else attr)
    return obj() if call else obj


def make_server(app, host, port, max_connections=10000, access_log=True):
    """A Tempo server that upgrades websocket requests (not started); see greenredis.tempo.server."""
    from greenredis.tempo.server import make_server

    return make_server(app, host, port, max_connections, access_log)


def run(args):
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        monkey.patch_all()
    import gevent
    import gevent.event

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    app = load_app(args.app)
    server = make_server(app, args.host, args.port, args.max_connections, not args.no_access_log)
    server.start()
    print(
        f"tempo: serving on http://{args.host}:{server.server_port}/ "
        f"(redis: {os.environ.get('REDIS_URL') or 'redis://127.0.0.1:6379/0'})",
        flush=True,
    )
    done = gevent.event.Event()

    def stop(*_):
        done.set()

    gevent.signal_handler(signal.SIGTERM, stop)
    gevent.signal_handler(signal.SIGINT, stop)
    done.wait()
    print("tempo: stopping", flush=True)
    server.stop(timeout=5)
    return 0
