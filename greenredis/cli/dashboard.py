"""Bring up the whole Tempo dashboard: Redis, the web app and the demo instances.

Redis is embedded when $REDIS_URL is unset; the rest runs like ``honcho start``
with the Procfile.

The web and demo processes are children with their output prefixed by name;
the URL to open is printed once the web answers. Ctrl-C stops everything.
"""

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

# Runs one subcommand module directly (``python -c ENTRY web --port 5000``), so a
# child does not depend on every other subcommand importing cleanly.
ENTRY = (
    "import argparse, importlib, sys; "
    "m = importlib.import_module('greenredis.cli.' + sys.argv[1]); "
    "p = argparse.ArgumentParser(prog='greenredis ' + sys.argv[1]); m.add_arguments(p); "
    "sys.exit(m.run(p.parse_args(sys.argv[2:])) or 0)"
)


def add_arguments(parser):
    parser.add_argument(
        "--port", type=int, default=None, help="web port (default $PORT, else 5000, else any free port)"
    )
    parser.add_argument("--host", default="127.0.0.1", help="web address (default 127.0.0.1)")
    parser.add_argument("--no-demo", action="store_true", help="do not run the demo instances")
    parser.add_argument("--web", type=int, default=3, help="demo web instances (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="demo workers (default 2)")


def _pump(name, stream, width, lock):
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace").rstrip("\n")
        with lock:
            sys.stdout.write(f"{time.strftime('%H:%M:%S')} {name:<{width}} | {line}\n")
            sys.stdout.flush()


def _wait_http(url, proc, timeout=30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(url, timeout=2).read()
            return True
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    return False


def _port_or_free(host, port):
    """``port`` if nothing listens there, else a free one."""
    import socket

    from greenredis.server import free_port

    with socket.socket() as s:
        try:
            s.bind((host, port))
            return port
        except OSError:
            return free_port()


def run(args):
    from greenredis.server import RedisServer

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server = None
    url = os.environ.get("REDIS_URL")
    if not url:
        server = RedisServer().start()
        url = server.url
        print(
            f"dashboard: started an embedded redis-server at {url} (set REDIS_URL to use yours)", flush=True
        )
    if args.port is None:
        args.port = int(os.environ.get("PORT") or 0) or _port_or_free(args.host, 5000)
    env = {**os.environ, "REDIS_URL": url, "PYTHONUNBUFFERED": "1"}
    procs = {
        "web": [
            sys.executable,
            "-c",
            ENTRY,
            "web",
            "--host",
            args.host,
            "--port",
            str(args.port),
            "--no-access-log",
        ]
    }
    if not args.no_demo:
        procs["demo"] = [
            sys.executable,
            "-c",
            ENTRY,
            "demo",
            "--web",
            str(args.web),
            "--workers",
            str(args.workers),
        ]
    lock = threading.Lock()
    width = max(map(len, procs))
    children = {}
    try:
        for name, argv in procs.items():
            p = subprocess.Popen(
                argv,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
            children[name] = p
            threading.Thread(target=_pump, args=(name, p.stdout, width, lock), daemon=True).start()
        shown = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
        if (
            _wait_http(f"http://{shown}:{args.port}/healthz", children["web"])
            and children["web"].poll() is None
        ):
            with lock:
                print(f"\n  Tempo is up: open http://{shown}:{args.port}/   (Ctrl-C to stop)\n", flush=True)
        while all(p.poll() is None for p in children.values()):
            if stop.wait(0.5):
                print("\ndashboard: stopping", flush=True)
                return 0
        dead = [n for n, p in children.items() if p.poll() is not None]
        print(f"dashboard: {', '.join(dead)} exited; stopping", flush=True)
        return 1
    finally:
        for p in children.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in children.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if server is not None:
            server.close()
