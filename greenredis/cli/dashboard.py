"""Bring up the whole Tempo dashboard: Redis, the web app and the demo instances.

Redis is embedded when $REDIS_URL is unset (and checked before anything starts when
it is set); the rest runs like ``honcho start`` with the Procfile.

The web and demo processes are children with their output prefixed by name; they
die with this process, even a SIGKILLed one. The URL to open is printed once our
web process listens and answers. Port 5000 (or $PORT) unless taken: then any free
port, and it says so; a --port that is taken is an error. Ctrl-C stops everything.
"""

import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import gevent
import gevent.event

from greenredis.cli import lifecycle, logs
from greenredis.cli.failures import Fatal, probe
from greenredis.cli.web import open_url, parse_port
from greenredis.url import redact_url

log = logging.getLogger("greenredis.dashboard")

# Runs one subcommand (``python -c ENTRY web --port 5000``) through ``greenredis.cli.main``,
# which imports only that subcommand's module. Kept for the tests' helpers.
ENTRY = "import sys; from greenredis.cli import main; sys.exit(main(sys.argv[1:]))"
DEFAULT_PORT = 5000


def add_arguments(parser):
    parser.add_argument(
        "--port", default=None, help="web port (default $PORT, else 5000, else any free port)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="web address (default 127.0.0.1)")
    parser.add_argument("--no-demo", action="store_true", help="do not run the demo instances")
    parser.add_argument("--web", type=int, default=3, help="demo web instances (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="demo workers (default 2)")
    parser.add_argument(
        "--timeout", type=float, default=60.0, help="seconds to wait for the web process (default 60)"
    )


def port_free(host, port):
    """True if we could listen on ``host:port`` now (as the web process will)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gevent's server does
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def choose_port(host, requested, env_port):
    """(port, note): the requested port (an error if taken), else $PORT, else 5000 if free,
    else a free one; ``note`` says why it is not the one asked for."""
    from greenredis.server import free_port

    if requested is not None or env_port:
        what = "--port" if requested is not None else "PORT"
        port = parse_port(requested if requested is not None else env_port, what)
        if port and not port_free(host, port):
            raise Fatal(
                f"port {port} on {host} ({what}) is in use by another process",
                "stop it, or pick another: --port N (or leave both unset for any free port)",
            )
        return port or free_port(), None
    if port_free(host, DEFAULT_PORT):
        return DEFAULT_PORT, None
    port = free_port()
    return port, f"port {DEFAULT_PORT} is in use by another process; using port {port}"


def _pump(name, stream, width, out):
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip("\n")
        out.write(f"{time.strftime('%H:%M:%S')} {name:<{width}} | {line}\n")
        out.flush()


def _answers(url):
    try:
        urllib.request.urlopen(url, timeout=2).read()
        return True
    except (urllib.error.URLError, OSError):
        return False


def start_redis():
    """An embedded redis-server; a ``Fatal`` if there is none to run."""
    from greenredis.server import RedisServer, find_redis_server

    try:
        find_redis_server()
    except Exception:
        raise Fatal(
            "redis-server is not installed",
            "install it (sudo apt-get install redis-server), or set REDIS_URL to a Redis of yours",
        ) from None
    try:
        return RedisServer().start()
    except Exception as e:
        raise Fatal(
            f"the embedded redis-server did not start: {e}", "set REDIS_URL to a Redis of yours"
        ) from None


def run(args):
    port, note = choose_port(args.host, args.port, os.environ.get("PORT"))
    server = watchdog = None
    url = os.environ.get("REDIS_URL")
    if url:
        probe(url)
        log.info("using Redis at %s (REDIS_URL)", redact_url(url))
    else:
        server = start_redis()
        lifecycle.kill_on_hard_exit(server.proc)
        watchdog = lifecycle.guard(server.proc.pid)  # redis-server cannot watch us itself
        url = server.url
        log.info("started an embedded redis-server at %s (set REDIS_URL to use yours)", url)
    if note:
        log.warning("%s", note)
    env = {
        **os.environ,
        "REDIS_URL": url,
        "PYTHONUNBUFFERED": "1",
        lifecycle.PARENT_ENV: str(os.getpid()),
        logs.NO_TIME_ENV: "0",
    }
    env.pop("PORT", None)
    level = ["--log-level", args.log_level] if getattr(args, "log_level", None) else []
    module = [sys.executable, "-m", "greenredis"]
    procs = {"web": [*module, "web", *level, "--host", args.host, "--port", str(port), "--no-access-log"]}
    if not args.no_demo:
        procs["demo"] = [*module, "demo", *level, "--web", str(args.web), "--workers", str(args.workers)]
    width = max(map(len, procs))
    children, pumps = {}, []
    try:
        for name, argv in procs.items():
            p = subprocess.Popen(
                argv,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C reaches us; we stop them in order
            )
            children[name] = p
            lifecycle.kill_on_hard_exit(p)
            pumps.append(gevent.spawn(_pump, name, p.stdout, width, sys.stdout))
        web = children["web"]
        health = f"http://127.0.0.1:{port}/healthz" if args.host in ("0.0.0.0", "") else None
        health = health or f"{open_url(args.host, port)}healthz"
        deadline = time.monotonic() + args.timeout
        while web.poll() is None and not _answers(health):
            if time.monotonic() > deadline:
                raise Fatal(f"the web process did not answer on port {port} within {args.timeout:g} s")
            gevent.sleep(0.2)
        if web.poll() is not None:
            gevent.joinall(pumps, timeout=2)
            raise Fatal(f"the web process exited ({web.returncode}) before it served: see its lines above")
        # Our web process answered; it holds the port (it could bind it), so the answer is ours.
        sys.stdout.write(f"\n  Tempo is up: open {open_url(args.host, port)}   (Ctrl-C to stop)\n\n")
        sys.stdout.flush()
        while all(p.poll() is None for p in children.values()):
            gevent.sleep(0.5)
        dead = [f"{n} (exit {p.returncode})" for n, p in children.items() if p.poll() is not None]
        raise Fatal(f"{', '.join(dead)} exited; stopped the rest")
    finally:
        for p in children.values():
            if p.poll() is None:
                p.terminate()
        for p in children.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        gevent.joinall(pumps, timeout=2)
        if watchdog is not None:
            watchdog.kill()  # first: it must not act on a pid we are about to free
            watchdog.wait()
        if server is not None:
            server.close()
