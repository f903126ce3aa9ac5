#!/usr/bin/env python
"""Benchmark Tempo's websocket fan-out.

N websocket viewers watch one instance while a publisher sends M points/s with
``Stats.publish``. Reports delivered messages/s, latency from PUBLISH to receipt
(p50/p99/max), dropped messages, the web process's CPU and its memory per
viewer, and checks that the web process holds one Redis subscription for the
channel (PUBSUB NUMSUB) however many viewers watch.

Processes: this one (orchestrator + publisher), ``greenredis web`` (the app, as
in production) and ``--client-procs`` viewer processes (raw gevent websocket
clients, one greenlet each). Redis is embedded unless ``--url`` is given.

    .venv/bin/python scripts/bench_tempo.py --viewers 2000 --rate 10 --seconds 20

``--heavy`` adds one more viewer (its own process) that re-watches a 300-metric
x 600-point instance's history every second while the others are measured.
"""

import argparse
import base64
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTANCE = "bench.1"


# -- viewer process ---------------------------------------------------------------


def client_main(host, port, n, seconds_file):
    """Run n viewers; print one JSON line with their results when stdin says stop."""
    from gevent import monkey

    monkey.patch_all()
    import gevent
    import gevent.fileobject
    from gevent import socket

    lat = []
    stats = {"messages": 0, "dropped": 0, "histories": 0, "errors": 0, "connected": 0}
    state = {"measuring": False}

    def read_exact(f, k):
        data = f.read(k)
        if len(data) != k:
            raise EOFError
        return data

    def viewer(i):
        try:
            s = socket.create_connection((host, port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            key = base64.b64encode(os.urandom(16)).decode()
            s.sendall(
                (
                    f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    f"Sec-WebSocket-Version: 13\r\n\r\n"
                ).encode()
            )
            f = s.makefile("rb")
            status = f.readline()
            if b" 101 " not in status:
                raise RuntimeError(status)
            while f.readline() not in (b"\r\n", b""):
                pass
            req = json.dumps({"op": "watch", "kind": "stats", "instance": INSTANCE}).encode()
            mask = os.urandom(4)
            masked = bytes(b ^ mask[j % 4] for j, b in enumerate(req))
            s.sendall(bytes([0x81, 0x80 | len(req)]) + mask + masked)
            stats["connected"] += 1
            while True:
                b0, b1 = read_exact(f, 2)
                length = b1 & 0x7F
                if length == 126:
                    length = int.from_bytes(read_exact(f, 2), "big")
                elif length == 127:
                    length = int.from_bytes(read_exact(f, 8), "big")
                payload = read_exact(f, length)
                if b0 & 0x0F != 1:
                    if b0 & 0x0F == 8:
                        return
                    continue
                now = time.time()
                for m in json.loads(payload):
                    t = m["type"]
                    if t == "point":
                        if state["measuring"]:
                            stats["messages"] += 1
                            lat.append(now - m["ts"])
                    elif t == "history":
                        stats["histories"] += 1
                    elif t == "dropped":
                        if state["measuring"]:
                            stats["dropped"] += m["count"]
                    elif t == "error":
                        stats["errors"] += 1
        except (OSError, EOFError, RuntimeError, ValueError):
            stats["errors"] += 1

    greenlets = []
    for i in range(n):
        greenlets.append(gevent.spawn(viewer, i))
        if i % 50 == 49:
            gevent.sleep(0.02)
    # protocol on stdin: "measure" starts counting, "stop" prints results
    stdin = gevent.fileobject.FileObject(sys.stdin)
    for line in stdin:
        cmd = line.strip()
        if cmd == "status":
            print(
                json.dumps(
                    {
                        "connected": stats["connected"],
                        "histories": stats["histories"],
                        "errors": stats["errors"],
                    }
                ),
                flush=True,
            )
        elif cmd == "measure":
            state["measuring"] = True
            print("{}", flush=True)
        elif cmd == "stop":
            state["measuring"] = False
            lat.sort()
            print(json.dumps({**stats, "lat": _pcts(lat)}), flush=True)
            break
    gevent.killall(greenlets, timeout=2)


def _pcts(sorted_lat):
    if not sorted_lat:
        return {}
    n = len(sorted_lat)
    return {
        "n": n,
        "p50": sorted_lat[n // 2],
        "p90": sorted_lat[int(n * 0.9)],
        "p99": sorted_lat[min(n - 1, int(n * 0.99))],
        "max": sorted_lat[-1],
    }


# -- orchestrator --------------------------------------------------------------


def proc_rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def proc_cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ask(proc, cmd):
    proc.stdin.write(cmd + "\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"viewer process exited: {proc.stderr.read()}")
    return json.loads(line)


def heavy_main(host, port, instance):
    """Watch ``instance``'s history, read it all, unwatch; once a second. Prints
    one JSON line per history read (parts, seconds)."""
    import websocket

    ws = websocket.create_connection(f"ws://{host}:{port}/ws", timeout=120)
    while True:
        t0 = time.monotonic()
        ws.send(json.dumps({"op": "watch", "kind": "stats", "instance": instance}))
        histories = mores = 0
        while not histories or mores >= histories:
            frame = ws.recv()
            histories += frame.count('{"type":"history"')
            mores += frame.count('"more":true}')
        ws.send(json.dumps({"op": "unwatch", "kind": "stats", "instance": instance}))
        took = time.monotonic() - t0
        print(json.dumps({"parts": histories, "seconds": round(took, 3)}), flush=True)
        time.sleep(max(0.0, 1.0 - took))


def fill_heavy(r, instance, metrics=300, points=600):
    from greenredis.telemetry import names

    now = time.time()
    for m in range(metrics):
        metric = f"metric_{m:04d}"
        r.cmd(
            [
                ["DEL", names.history_key(instance, metric)],
                ["LPUSH", names.history_key(instance, metric)]
                + [names.encode_point(metric, 12345.678 + j, now - points + j) for j in range(points)],
                ["SADD", names.metrics_key(instance), metric],
            ]
        )
    r.cmd(["ZADD", names.INSTANCES, repr(now), instance])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--viewers", type=int, default=2000)
    p.add_argument("--rate", type=float, default=10.0, help="points per second published")
    p.add_argument("--seconds", type=float, default=20.0, help="measured duration")
    p.add_argument("--client-procs", type=int, default=1)
    p.add_argument("--url", default=None, help="Redis URL (default: an embedded redis-server)")
    p.add_argument(
        "--heavy", action="store_true", help="plus one viewer re-watching a 300-metric history every second"
    )
    p.add_argument("--client", nargs=3, metavar=("HOST", "PORT", "N"), help=argparse.SUPPRESS)
    p.add_argument("--heavy-client", nargs=3, metavar=("HOST", "PORT", "I"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.client:
        return client_main(args.client[0], int(args.client[1]), int(args.client[2]), None)
    if args.heavy_client:
        return heavy_main(args.heavy_client[0], int(args.heavy_client[1]), args.heavy_client[2])

    sys.path.insert(0, ROOT)
    import greenredis
    from greenredis.server import RedisServer, free_port
    from greenredis.telemetry.stats import Stats

    server = None
    url = args.url
    if url is None:
        server = RedisServer().start()
        url = server.url
    port = free_port()
    # every viewer connects from 127.0.0.1: no per-address connection cap
    env = {**os.environ, "REDIS_URL": url, "TEMPO_GRID": "0", "TEMPO_MAX_PER_IP": "0"}
    from greenredis.cli.dashboard import ENTRY

    web = subprocess.Popen(
        [sys.executable, "-c", ENTRY, "web", "--port", str(port), "--no-access-log"],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    clients = []
    r = greenredis.Redis.from_url(url)
    try:
        stats = Stats(r, INSTANCE, history=100)
        stats.publish("rps", 0.0)
        import urllib.request

        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2).read()
                break
            except OSError:
                time.sleep(0.1)
        rss0 = proc_rss_kb(web.pid)
        per = [
            args.viewers // args.client_procs + (1 if i < args.viewers % args.client_procs else 0)
            for i in range(args.client_procs)
        ]
        t0 = time.time()
        for n in per:
            clients.append(
                subprocess.Popen(
                    [sys.executable, os.path.abspath(__file__), "--client", "127.0.0.1", str(port), str(n)],
                    cwd=ROOT,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        while True:
            st = [ask(c, "status") for c in clients]
            done = sum(s["histories"] for s in st)
            errors = sum(s["errors"] for s in st)
            if done + errors >= args.viewers:
                break
            if time.time() - t0 > 300:
                raise RuntimeError(f"only {done} viewers connected after 300s")
            time.sleep(0.5)
        connect_s = time.time() - t0
        time.sleep(1.0)
        rss1 = proc_rss_kb(web.pid)
        numsub = r.cmd(["PUBSUB", "NUMSUB", f"stats:{{{INSTANCE}}}"])[1]
        heavy = None
        if args.heavy:
            fill_heavy(r, "heavy.1")
            heavy = subprocess.Popen(
                [
                    sys.executable,
                    os.path.abspath(__file__),
                    "--heavy-client",
                    "127.0.0.1",
                    str(port),
                    "heavy.1",
                ],
                cwd=ROOT,
                stdout=subprocess.PIPE,
                text=True,
            )
            heavy.stdout.readline()  # its first history read is done: measure from here
        for c in clients:
            ask(c, "measure")
        cpu0, t_start = proc_cpu_s(web.pid), time.time()
        interval = 1.0 / args.rate
        next_t = time.monotonic()
        sent = 0
        import gevent

        while time.time() - t_start < args.seconds:
            stats.publish("rps", float(sent))
            sent += 1
            next_t += interval
            gevent.sleep(max(0.0, next_t - time.monotonic()))
        elapsed = time.time() - t_start
        cpu = proc_cpu_s(web.pid) - cpu0
        gevent.sleep(1.0)  # let the last points arrive
        results = [ask(c, "stop") for c in clients]
        heavy_reads = []
        if heavy is not None:
            heavy.kill()
            out, _ = heavy.communicate()
            heavy_reads = [json.loads(line) for line in out.splitlines() if line.strip()]
        msgs = sum(x["messages"] for x in results)
        dropped = sum(x["dropped"] for x in results)
        # merge latency percentiles conservatively: the worst process's percentile
        lat = {k: max(x["lat"].get(k, 0) for x in results) for k in ("p50", "p90", "p99", "max")}
        expected = sent * (args.viewers - errors)
        print(
            f"viewers: {args.viewers} ({errors} failed) in {args.client_procs} client process(es), "
            f"connected+history in {connect_s:.1f}s"
        )
        print(f"published: {sent} points in {elapsed:.1f}s ({sent / elapsed:.1f}/s)")
        print(
            f"delivered: {msgs} of {expected} ({100.0 * msgs / max(expected, 1):.2f}%), "
            f"{msgs / elapsed:,.0f} messages/s; dropped (told to viewers): {dropped}"
        )
        print(
            "latency PUBLISH->receipt: "
            + ", ".join(f"{k} {v * 1000:.1f} ms" for k, v in lat.items())
            + ("  (worst client process)" if len(results) > 1 else "")
        )
        print(
            f"web process: RSS {rss0 / 1024:.1f} MB idle -> {rss1 / 1024:.1f} MB with viewers "
            f"= {(rss1 - rss0) / max(args.viewers, 1):.1f} KB per viewer; "
            f"CPU {100 * cpu / elapsed:.0f}% of one core while publishing"
        )
        print(f"redis subscriptions to stats:{{{INSTANCE}}}: {numsub} (PUBSUB NUMSUB)")
        if heavy is not None:
            took = sorted(x["seconds"] for x in heavy_reads) or [0.0]
            print(
                f"heavy viewer: {len(heavy_reads)} reads of a 300x600 history while measuring, "
                f"{heavy_reads[-1]['parts'] if heavy_reads else 0} parts each, "
                f"median {took[len(took) // 2]:.2f}s, max {took[-1]:.2f}s"
            )
        print(f"machine: {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    finally:
        for c in clients:
            if c.poll() is None:
                c.kill()
        web.terminate()
        try:
            web.wait(10)
        except subprocess.TimeoutExpired:
            web.kill()
        r.close()
        if server is not None:
            server.close()


if __name__ == "__main__":
    sys.exit(main())
