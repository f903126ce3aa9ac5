#!/usr/bin/env python
"""Benchmark greenredis.replication.rdb.RDBParser against redis-server's own RDB load.

Starts a private redis-server, fills it (DEBUG POPULATE for strings; redis-py
pipelines for hashes), SAVEs, restarts it to read "DB loaded from disk: X seconds"
from its log, then parses the same dump.rdb with RDBParser fed in 64 KiB chunks.

    .venv/bin/python scripts/bench_rdb.py [--keys 1000000] [--hashes 100000] [--fields 10]
"""

import argparse
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import redis

from greenredis.replication.rdb.crc64 import HAVE_FAST_CRC
from greenredis.replication.rdb.lzf import HAVE_C_LZF
from greenredis.replication.rdb.parser import RDBParser
from greenredis.server import RedisServer

CHUNK = 64 * 1024


def progress(msg):
    print(f"[bench_rdb {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def server_load_seconds(server):
    """Restart the server and return how long it said loading dump.rdb took."""
    with open(server.log_path, "a") as f:
        f.write("--- bench restart ---\n")
    server.restart(timeout=300)
    with open(server.log_path, errors="replace") as f:
        log = f.read().rsplit("--- bench restart ---", 1)[-1]
    m = re.search(r"DB loaded from disk: ([0-9.]+) seconds", log)
    if not m:
        raise RuntimeError("no 'DB loaded from disk' line in the log:\n" + log[-2000:])
    return float(m.group(1))


def parse_seconds(path, repeat):
    with open(path, "rb") as f:
        data = f.read()
    view = memoryview(data)
    best = None
    for _ in range(repeat):
        t0 = time.perf_counter()
        p = RDBParser()
        for i in range(0, len(data), CHUNK):
            p.feed(view[i : i + CHUNK])
        ks = p.finish()
        elapsed = time.perf_counter() - t0
        best = elapsed if best is None else min(best, elapsed)
        keys = ks.key_count()
        del ks, p
    return best, keys, len(data)


def fill_hashes(client, count, fields):
    pipe = client.pipeline(transaction=False)
    for n in range(count):
        pipe.hset(f"hash:{n}", mapping={f"field:{k}": f"value:{n}:{k}" for k in range(fields)})
        if n % 1000 == 999:
            pipe.execute()
    pipe.execute()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--hashes", type=int, default=100_000)
    ap.add_argument("--fields", type=int, default=10)
    ap.add_argument("--repeat", type=int, default=3, help="parse runs per file (best is kept)")
    args = ap.parse_args()

    rows = []
    with RedisServer(debug=True, persist=True) as server:
        client = redis.Redis(port=server.port)
        dump = os.path.join(server.dir, "dump.rdb")

        progress(f"DEBUG POPULATE {args.keys}")
        client.execute_command("DEBUG", "POPULATE", args.keys)
        client.save()
        progress("restarting redis-server to time its load")
        server_s = server_load_seconds(server)
        progress(f"parsing {os.path.getsize(dump)} bytes with RDBParser")
        ours_s, keys, size = parse_seconds(dump, args.repeat)
        assert keys == args.keys, (keys, args.keys)
        rows.append((f"strings (DEBUG POPULATE), {size / 1e6:.1f} MB", keys, server_s, ours_s))

        client = redis.Redis(port=server.port)
        client.flushall()
        progress(f"writing {args.hashes} hashes of {args.fields} fields")
        fill_hashes(client, args.hashes, args.fields)
        client.save()
        progress("restarting redis-server to time its load")
        server_s = server_load_seconds(server)
        progress(f"parsing {os.path.getsize(dump)} bytes with RDBParser")
        ours_s, keys, size = parse_seconds(dump, args.repeat)
        assert keys == args.hashes, (keys, args.hashes)
        rows.append(
            (f"hashes of {args.fields} fields (listpack), {size / 1e6:.1f} MB", keys, server_s, ours_s)
        )

    print(
        f"\nRDB load, {os.cpu_count()} cores, Python {sys.version.split()[0]}, "
        f"C CRC: {HAVE_FAST_CRC}, C LZF: {HAVE_C_LZF}, {time.strftime('%Y-%m-%d')}"
    )
    print(
        f"| {'dataset':<42} | {'keys':>9} | {'redis-server s':>14} | {'RDBParser s':>11} "
        f"| {'RDBParser keys/s':>16} | {'ratio':>5} |"
    )
    print(f"|{'-' * 44}|{'-' * 11}|{'-' * 16}|{'-' * 13}|{'-' * 18}|{'-' * 7}|")
    for name, keys, server_s, ours_s in rows:
        ratio = ours_s / server_s if server_s else float("inf")
        print(
            f"| {name:<42} | {keys:>9} | {server_s:>14.3f} | {ours_s:>11.3f} "
            f"| {keys / ours_s:>16,.0f} | {ratio:>4.1f}x |"
        )


if __name__ == "__main__":
    main()
