"""Helpers for the Tempo tests: the web app in a subprocess, websocket clients."""

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import websocket

from greenredis.cli.dashboard import ENTRY
from greenredis.server import free_port

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class WebProcess:
    """``greenredis web`` in a subprocess, as in production (monkey-patched gevent)."""

    def __init__(self, redis_url, port=None, args=(), **env):
        self.port = port or free_port()
        self.args = list(args)
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/ws"
        self.env = {
            **os.environ,
            "REDIS_URL": redis_url,
            "TEMPO_GRID": "0",
            **{k: str(v) for k, v in env.items()},
        }
        self.proc = None

    def start(self, timeout=120):  # a start took over 30 s with the load average at 8
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ENTRY, "web", "--port", str(self.port), "--no-access-log", *self.args],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(self.url + "/healthz", timeout=2).read()
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    out = (
                        self.proc.stdout.read().decode(errors="replace")
                        if self.proc.poll() is not None
                        else ""
                    )
                    self.stop()
                    raise RuntimeError(f"tempo web did not start:\n{out}") from None
                time.sleep(0.1)

    def get_json(self, path, auth=None):
        req = urllib.request.Request(self.url + path)
        if auth:
            import base64

            req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        return json.loads(urllib.request.urlopen(req, timeout=10).read())

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Client:
    """A websocket client that reads Tempo's frames (JSON arrays) message by message."""

    def __init__(self, url, timeout=30, **kw):
        self.ws = websocket.create_connection(url, timeout=timeout, **kw)
        self.pending = []

    def send(self, obj):
        self.ws.send(obj if isinstance(obj, (str, bytes)) else json.dumps(obj))

    def recv(self):
        while not self.pending:
            frame = self.ws.recv()
            self.pending.extend(json.loads(frame))
        return self.pending.pop(0)

    def until(self, predicate, limit=100000):
        """Messages up to and including the first that matches."""
        seen = []
        for _ in range(limit):
            m = self.recv()
            seen.append(m)
            if predicate(m):
                return seen
        raise AssertionError(f"no matching message in {limit}: last {seen[-3:]}")

    def close(self):
        self.ws.close()


def frames(viewer):
    """Every queued message of a hub viewer, decoded, in order."""
    out = []
    while True:
        text = viewer.take()
        if text is None:
            return out
        out += json.loads(text)
