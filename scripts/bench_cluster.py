#!/usr/bin/env python
"""greenredis.Cluster vs redis-py's RedisCluster on a private 3-primary cluster, in one run,
and the same rows against one plain node for comparison.

    .venv/bin/python scripts/bench_cluster.py [--async N C] [--batch N] [--rounds R]

Rows: ``async N C``: C greenlets share one client, N GETs in all over keys spread across
every slot (redis-py gets its pools, gevent-patched); ``batch N``: one ``cmd`` with N GETs
over all slots vs redis-py's ``pipeline()`` (which splits per node too). Prints req/s,
greenredis/redis-py ratios, and what the cluster path costs over a single node.
Best of R alternating runs per cell. A benchmark, not a test: run it on a quiet machine.
"""

from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

import greenredis  # noqa: E402
from greenredis.server import RedisCluster, RedisServer  # noqa: E402

KEYS = 10_000  # distinct keys, spread over every slot


def _async(get, n, c):
    per = n // c

    def worker(w):
        for i in range(per):
            get(f"k:{(w * per + i) % KEYS}")

    t = time.perf_counter()
    gevent.joinall([gevent.spawn(worker, w) for w in range(c)], raise_error=True)
    return per * c / (time.perf_counter() - t)


def _batch_g(g, n):
    cmds = [["GET", f"k:{i % KEYS}"] for i in range(n)]
    t = time.perf_counter()
    replies = g.cmd(cmds)
    rate = n / (time.perf_counter() - t)
    assert len(replies) == n and replies[1] == b"v1", replies[:2]
    return rate


def _batch_p(p, n):
    t = time.perf_counter()
    pipe = p.pipeline(transaction=False) if isinstance(p, _redis().Redis) else p.pipeline()
    for i in range(n):
        pipe.get(f"k:{i % KEYS}")
    replies = pipe.execute()
    rate = n / (time.perf_counter() - t)
    assert len(replies) == n and replies[1] == b"v1", replies[:2]
    return rate


def _redis():
    import redis

    return redis


def _best(pair, rounds):
    best = [0.0, 0.0]
    for _ in range(rounds):
        for i, fn in enumerate(pair):
            best[i] = max(best[i], fn())
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--async", dest="async_", nargs=2, type=int, default=[100_000, 1000], metavar=("N", "C")
    )
    parser.add_argument("--batch", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    redis = _redis()
    from redis.cluster import RedisCluster as PyCluster

    n_async, c = args.async_
    with RedisCluster(primaries=3) as rc, RedisServer() as single:
        g_cluster = greenredis.Cluster(rc.startup_nodes)
        g_single = greenredis.Redis.from_url(single.url)
        p_cluster = PyCluster(host="127.0.0.1", port=rc.startup_nodes[0][1], max_connections=2 * c)
        p_single = redis.Redis(
            connection_pool=redis.BlockingConnectionPool.from_url(single.url, max_connections=c, timeout=None)
        )
        for g in (g_cluster, g_single):
            g.cmd([["SET", f"k:{i}", f"v{i}"] for i in range(KEYS)])

        def g_get(client):
            return lambda k: client.cmd(["GET", k])

        steps = [
            (f"async {n_async} {c}", "cluster", (lambda: _async(g_get(g_cluster), n_async, c),
                                                  lambda: _async(p_cluster.get, n_async, c))),
            (f"async {n_async} {c}", "single", (lambda: _async(g_get(g_single), n_async, c),
                                                 lambda: _async(p_single.get, n_async, c))),
            (f"batch {args.batch}", "cluster", (lambda: _batch_g(g_cluster, args.batch),
                                                 lambda: _batch_p(p_cluster, args.batch))),
            (f"batch {args.batch}", "single", (lambda: _batch_g(g_single, args.batch),
                                                lambda: _batch_p(p_single, args.batch))),
        ]  # fmt: skip
        rows = []
        for label, where, pair in steps:
            print(f"running {label} ({where}) ...", flush=True)
            rows.append((label, where, *_best(pair, args.rounds)))
        print()
        print(f"{'row':24s} {'on':8s} {'greenredis':>12s} {'redis-py':>12s} {'ratio':>7s}")
        for label, where, gr, pr in rows:
            print(f"{label:24s} {where:8s} {gr:>12,.0f} {pr:>12,.0f} {gr / pr:>6.1f}x")
        print()
        for i in (0, 2):
            cl, si = rows[i][2], rows[i + 1][2]
            print(
                f"{rows[i][0]}: greenredis cluster path costs {100 * (si / cl - 1):+.0f}% over a single node"
            )
        print(
            f"\n{platform.node()}: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, Python "
            f"{platform.python_version()}, gevent {gevent.__version__}, redis-py {redis.__version__}, "
            f"{time.strftime('%Y-%m-%d')}; best of {args.rounds} alternating runs per cell"
        )
        g_cluster.close()
        g_single.close()
        p_cluster.close()
        p_single.close()


if __name__ == "__main__":
    main()
