"""Benchmark greenredis.Grid: N nodes in one process against one private redis-server.

Measures, with N nodes up: the time from a node's start() to its appearing in
every peer's nodes() (p50/p99), the same for update_meta() and a graceful
stop(), the time until a crashed node (greenlets killed, no leave) is gone from
every peer (target: within ttl + 1 s), and the Redis commands per node per
heartbeat interval (INFO commandstats deltas over a quiet window; target <= 3).

    .venv/bin/python scripts/bench_grid.py [--nodes 200] [--samples 30] [--ttl 5] [--interval 2]
                                           [--gc-freeze]

With 200 nodes in one process every view is in one heap (40,000 node entries),
so a full garbage collection pauses every node at once for tens of ms; that is
the tail of the latencies. ``--gc-freeze`` shows them without it.
"""

import argparse
import gc
import math
import os
import platform
import random
import sys
import time

import gevent

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import greenredis
from greenredis.grid.node import Grid
from greenredis.server import RedisServer


class Watch:
    """Records when each peer saw each (kind, name) event."""

    def __init__(self):
        self.seen = {}  # (kind, name) -> {peer: perf_counter time}

    def hook(self, grid):
        me = grid.name
        for kind in ("join", "update", "leave"):
            setattr(grid, f"on_{kind}", self._recorder(kind, me))

    def _recorder(self, kind, me):
        def record(name, meta):
            self.seen.setdefault((kind, name), {}).setdefault(me, time.perf_counter())

        return record

    def wait_all(self, kind, name, peers, t0, timeout):
        """Latency until every peer saw it, or None on timeout."""
        want = {p.name for p in peers if p.name != name}
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = self.seen.get((kind, name), {})
            if want <= got.keys():
                return max(got[p] for p in want) - t0
            gevent.sleep(0.001)
        return None

    def clear(self, kind, name):
        self.seen.pop((kind, name), None)


def pct(values, q):
    """Nearest-rank percentile."""
    s = sorted(values)
    return s[max(0, math.ceil(q * len(s)) - 1)] if s else float("nan")


def commandstats(r):
    out = {}
    for line in r.cmd(["INFO", "commandstats"]).decode().splitlines():
        if line.startswith("cmdstat_"):
            name, rest = line[len("cmdstat_") :].split(":", 1)
            out[name] = int(rest.split("calls=")[1].split(",")[0])
    return out


class GCPauses:
    """Longest garbage-collector pauses (they land on whatever is being measured)."""

    def __init__(self):
        self.pauses, self._t = [], None
        gc.callbacks.append(self._cb)

    def _cb(self, phase, info):
        if phase == "start":
            self._t = time.perf_counter()
        elif self._t is not None:
            self.pauses.append((time.perf_counter() - self._t, info["generation"]))


def settle(seconds=0.3):
    gevent.sleep(seconds)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=200)
    ap.add_argument("--samples", type=int, default=30, help="joins, updates and leaves measured")
    ap.add_argument("--crashes", type=int, default=5)
    ap.add_argument("--ttl", type=float, default=5.0)
    ap.add_argument("--interval", type=float, default=2.0)
    ap.add_argument(
        "--gc-freeze",
        action="store_true",
        help="gc.freeze() once the grid is up, so collections skip the 200 views",
    )
    ap.add_argument(
        "--quiet-intervals", type=int, default=5, help="heartbeat intervals over which commands are counted"
    )
    args = ap.parse_args()
    kw = dict(ttl=args.ttl, interval=args.interval, domain="bench", version="1")
    watch = Watch()
    with RedisServer() as server:
        r = greenredis.Redis.from_url(server.url)
        print(
            f"# {args.nodes} grid nodes, one process, one redis-server {server.url}; "
            f"ttl={args.ttl}s interval={args.interval}s"
        )
        print(
            f"# {platform.python_implementation()} {platform.python_version()}, "
            f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        )
        t = time.perf_counter()
        grids = []
        for i in range(args.nodes - 1):
            g = Grid(server.url, name=f"node.{i}", meta={"role": "bench"}, **kw)
            watch.hook(g)
            grids.append(g.start())
            if i % 20 == 19:  # starting in waves keeps the ping answers from piling up
                while any(len(x.nodes()) < len(grids) for x in grids):
                    gevent.sleep(0.01)
        while any(len(x.nodes()) < len(grids) for x in grids):
            gevent.sleep(0.01)
        print(f"# {len(grids)} nodes converged in {time.perf_counter() - t:.1f}s")
        settle(1.0)

        if args.gc_freeze:
            gc.collect()
            gc.freeze()
        gcp = GCPauses()
        joins, leaves, updates, misses = [], [], [], 0
        for k in range(args.samples):
            name = f"new.{k}"
            g = Grid(server.url, name=name, meta={"role": "bench"}, **kw)
            watch.hook(g)
            t0 = time.perf_counter()
            g.start()
            lat = watch.wait_all("join", name, grids, t0, 10)
            if lat is None:
                misses += 1
            else:
                joins.append(lat)
            settle(0.5)  # let the ping answers die down
            peers = grids + [g]
            target = random.choice(grids)
            watch.clear("update", target.name)
            t0 = time.perf_counter()
            target.update_meta(weight=str(k))
            lat = watch.wait_all("update", target.name, peers, t0, 10)
            updates.append(lat) if lat is not None else None
            misses += lat is None
            settle(0.1)
            t0 = time.perf_counter()
            g.stop()
            lat = watch.wait_all("leave", name, grids, t0, 10)
            leaves.append(lat) if lat is not None else None
            misses += lat is None
            settle(0.2)

        # commands per node per interval, in a quiet window
        settle(args.interval)
        before, t0 = commandstats(r), time.monotonic()
        beats0 = sum(g.stats["batches"] for g in grids)
        gevent.sleep(args.quiet_intervals * args.interval)
        after, elapsed = commandstats(r), time.monotonic() - t0
        beats = sum(g.stats["batches"] for g in grids) - beats0
        delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
        delta.pop("info", None)
        total = sum(delta.values())
        intervals = elapsed / args.interval
        per_node_interval = total / len(grids) / intervals
        per_beat = total / beats if beats else float("nan")
        mix = ", ".join(f"{k}={v}" for k, v in sorted(delta.items(), key=lambda kv: -kv[1]) if v)

        # crashes: greenlets killed, no leave message
        crashes = []
        victims = random.sample(grids, args.crashes)
        survivors = [g for g in grids if g not in victims]
        t0 = time.perf_counter()
        for v in victims:
            v.kill()
        for v in victims:
            lat = watch.wait_all("leave", v.name, survivors, t0, args.ttl * 3)
            crashes.append(lat if lat is not None else float("inf"))

        ms = lambda v: f"{v * 1000:8.1f} ms"
        print()
        print(f"{'measure':<34} {'p50':>11} {'p99':>11} {'max':>11}  target")
        print(
            f"{'join: start() -> all peers':<34} {ms(pct(joins, 0.5))} {ms(pct(joins, 0.99))} "
            f"{ms(max(joins, default=float('nan')))}  p99 <= 50 ms  (n={len(joins)})"
        )
        print(
            f"{'update_meta() -> all peers':<34} {ms(pct(updates, 0.5))} {ms(pct(updates, 0.99))} "
            f"{ms(max(updates, default=float('nan')))}  p99 <= 50 ms  (n={len(updates)})"
        )
        print(
            f"{'stop() -> gone from all peers':<34} {ms(pct(leaves, 0.5))} {ms(pct(leaves, 0.99))} "
            f"{ms(max(leaves, default=float('nan')))}  p99 <= 50 ms  (n={len(leaves)})"
        )
        print(
            f"{'crash -> gone from all peers':<34} {pct(crashes, 0.5):9.2f} s  {'':>10} "
            f"{max(crashes):9.2f} s   <= ttl + 1 = {args.ttl + 1:.1f} s  (n={len(crashes)})"
        )
        print(f"{'commands / node / interval':<34} {per_node_interval:11.2f}")
        print(f"{'commands / heartbeat batch':<34} {per_beat:11.2f} {'':>23}  <= 3")
        print(f"# quiet window {elapsed:.1f}s: {mix}")
        print(
            "# sorted ms: join",
            [round(x * 1000) for x in sorted(joins)][-8:],
            "update",
            [round(x * 1000) for x in sorted(updates)][-8:],
            "leave",
            [round(x * 1000) for x in sorted(leaves)][-8:],
        )
        worst = sorted(gcp.pauses, reverse=True)[:3]
        print(
            f"# GC{' (frozen after start-up)' if args.gc_freeze else ''} during the samples: "
            f"{len(gcp.pauses)} collections, longest "
            + ", ".join(f"{d * 1000:.1f} ms (gen {g})" for d, g in worst)
        )
        if misses:
            print(f"# {misses} samples not seen everywhere within 10 s")
        for g in survivors:
            g.stop(timeout=1)
        r.close()


if __name__ == "__main__":
    main()
