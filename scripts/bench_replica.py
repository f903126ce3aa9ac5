"""Measure the replica against one local redis-server, in one run.

1. Full sync of N string keys (DEBUG POPULATE) and of M hashes of 10 fields
   (listpack-encoded): seconds and keys/s for greenredis.Replica (RDB streamed from
   a disk-based sync, parsed as it arrives: ``last_full_sync_seconds``, from the
   ``$<size>`` header to the verified end), against a real redis-server replica of the
   same master (``replicaof``, its default disk-based load), timed from its log lines
   "MASTER <-> REPLICA sync: receiving N bytes from master" to "... Finished with
   success" (the same span, transfer included). Each is run 3 times in alternation (ours,
   theirs, ours, ...; ours 2 and 3 are forced full resyncs of the same Replica): median
   (min-max). Beside them: RDBParser alone on the same file, and redis-server loading
   that file at startup ("DB loaded from disk: X seconds", no transfer: a stricter
   number). Then the time to read every hash once (``Replica.get``) after the load.
   For the strings, what building the same dict costs with no parsing at all: a Python
   loop of two slices and an insert per key, and ``pickle.loads`` (C) of that dict.
2. Memory of the local copy of the N strings (RSS growth of this process) against
   the master's used_memory, and after 5 more full resyncs (the 2 timed ones and 3
   more; each old copy must be freed at the swap); the longest stall of a ticker
   greenlet (10 ms interval) in this process during the first N-string load (goal
   < 100 ms).
3. Stream apply rate (commands/s) while redis-benchmark hammers the master with
   SET/LPUSH/HSET, the CPU seconds this process spent per applied command
   (``time.process_time()`` over the run: what redis-server and redis-benchmark on the
   same cores do not stretch), and the lag behind the master: master_repl_offset vs our
   offset, sampled every 0.1 s, in bytes and in seconds until we reached that offset.

Usage: .venv/bin/python scripts/bench_replica.py [--strings 1000000] [--hashes 100000]
       [--resyncs 5] [--bench-requests 1000000]
"""

import argparse
import datetime
import gc
import os
import pickle
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import gevent

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from greenredis.client.redis import Redis
from greenredis.replication.rdb.parser import RDBParser
from greenredis.replication.replica import Replica
from greenredis.server import RedisServer


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def info(r, section):
    out = {}
    for line in r.cmd(["INFO", section]).decode().splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v
    return out


def progress(text):
    sys.stderr.write("\r" + text.ljust(110))
    sys.stderr.flush()


def redis_own_load(master):
    """SAVE on the master, start a second redis-server on that file, read its load time."""
    r = Redis.from_url(master.url, timeout=600)
    r.cmd(["SAVE"])
    r.close()
    d = tempfile.mkdtemp(prefix="greenredis-bench-")
    src = os.path.join(master.dir, "dump.rdb")
    shutil.copy(src, os.path.join(d, "dump.rdb"))
    size = os.path.getsize(src)
    loader = RedisServer(persist=True, dir=d)
    try:
        loader.start(timeout=600)
        with open(loader.log_path) as f:
            m = re.search(r"DB loaded from disk: ([0-9.]+) seconds", f.read())
        seconds = float(m.group(1)) if m else float("nan")
    finally:
        loader.stop()
    return seconds, size, d


_LOG_TIME = r"(\d+ \w{3} \d{4} \d\d:\d\d:\d\d\.\d{3}) . "


def _log_time(text):
    return datetime.datetime.strptime(text, "%d %b %Y %H:%M:%S.%f").timestamp()


def redis_replica_sync(master, expect):
    """A real redis-server replica of ``master`` (default config: disk-based load): the
    seconds from its "receiving N bytes from master" to "Finished with success" log lines."""
    replica = RedisServer(replicaof=("127.0.0.1", master.port))
    try:
        replica.start(timeout=60)
        start = end = None
        deadline = time.monotonic() + 600
        while end is None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the redis-server replica did not sync: {replica.log_tail()}")
            with open(replica.log_path) as f:
                log = f.read()
            m = re.search(_LOG_TIME + r"MASTER <-> REPLICA sync: receiving", log)
            done = re.search(_LOG_TIME + r"MASTER <-> REPLICA sync: Finished with success", log)
            if m and done:
                start, end = _log_time(m.group(1)), _log_time(done.group(1))
            else:
                progress(f"redis-server replica: syncing ({log.count(chr(10))} log lines)")
                gevent.sleep(0.1)
        r = Redis.from_url(replica.url, timeout=60)
        keys = r.cmd(["DBSIZE"])
        r.close()
        assert keys == expect, (keys, expect)
    finally:
        replica.close()
    progress("")
    sys.stderr.write("\r")
    return end - start


def alternate(master, rep, r, expect, first_seconds, label):
    """Ours (the load already done, ``first_seconds``), theirs, ours (a forced full
    resync of ``rep``), theirs, ours, theirs: ([our seconds], [their seconds])."""
    ours, theirs = [first_seconds], []
    for n in range(3):
        progress(f"{label}: redis-server replica {n + 1}/3")
        theirs.append(redis_replica_sync(master, expect))
        if n < 2:
            full_resyncs(master, rep, r, 1)
            st = rep.status()
            assert st["keys"] == expect, (st["keys"], expect)
            ours.append(st["last_full_sync_seconds"])
    return ours, theirs


def median_range(values):
    v = sorted(values)
    return f"{statistics.median(v):.2f} ({v[0]:.2f}-{v[-1]:.2f})"


def read_every_hash(rep, n):
    """Replica.get of each of the n hashes once: seconds."""
    get = rep.get
    t = time.perf_counter()
    for i in range(n):
        if get(f"hash:{i}") is None:
            raise AssertionError(f"hash:{i} missing")
    return time.perf_counter() - t


def parse_file(path):
    p = RDBParser()
    t = time.perf_counter()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(256 * 1024)
            if not chunk:
                break
            p.feed(chunk)
    ks = p.finish()
    seconds = time.perf_counter() - t
    n = ks.key_count()
    del ks, p
    gc.collect()
    return seconds, n


def dict_floors(path, times=3):
    """What building the same dict costs in this process, without any parsing: the
    pure-Python floor (two slices and a dict insert per key, from offsets worked out in
    advance: the least a Python loop over the records does) and the C floor
    (``pickle.loads`` of that dict: CPython's own C code creating the same objects, what a
    compiled parser could reach). ([python seconds], [pickle seconds])."""
    p = RDBParser()
    with open(path, "rb") as f:
        p.feed(f.read())
    data = p.finish().db(0).data
    flat, offsets, at = [], [], 0
    for k, v in data.items():
        flat += (k, v)
        offsets.append((at, at + len(k), at + len(k) + len(v)))
        at += len(k) + len(v)
    flat = b"".join(flat)
    dumped = pickle.dumps(dict(data), pickle.HIGHEST_PROTOCOL)
    del p, data
    gc.collect()

    def python_loop():
        d, b = {}, flat
        for ka, va, vb in offsets:
            d[b[ka:va]] = b[va:vb]
        return d

    py, c = [], []
    for _ in range(times):
        for build, into in ((python_loop, py), (lambda: pickle.loads(dumped), c)):
            t = time.perf_counter()
            d = build()
            into.append(time.perf_counter() - t)
            del d
            gc.collect()
    return py, c


def ticker(gaps, interval=0.01):
    """A greenlet's view of the process: how late each of its ticks comes (wall seconds),
    and how much CPU this process spent between two ticks (what other processes on a
    busy machine do not stretch)."""
    last, last_cpu = time.perf_counter(), time.process_time()
    while True:
        gevent.sleep(interval)
        now, now_cpu = time.perf_counter(), time.process_time()
        gaps.append((now - last - interval, now_cpu - last_cpu))
        last, last_cpu = now, now_cpu


def full_sync(master, label, expect, gaps=None):
    """Start a Replica, time the full sync; returns (replica, seconds, keys).
    ``gaps``: a list to fill with a ticker greenlet's delays during the load."""
    rep = Replica(master.url, repl_timeout=600)
    tick = gevent.spawn(ticker, gaps) if gaps is not None else None
    rep.start(block=False)
    t0 = time.perf_counter()
    while not rep.loaded:
        st = rep.status()
        if st["state"] == "loading" and st.get("load_seconds"):
            done, size = st["bytes_loaded"], st["rdb_size"]
            pct = f"{100.0 * done / size:5.1f}%" if size else "?"
            rate = st["keys_loaded"] / max(st["load_seconds"], 1e-9)
            progress(
                f"{label}: loading {pct} {done / 1e6:.1f} MB, {st['keys_loaded']:,} keys, {rate:,.0f} keys/s"
            )
        else:
            progress(f"{label}: {st['state']} ({time.perf_counter() - t0:.1f}s)")
        gevent.sleep(0.2)
    if tick is not None:
        tick.kill()
    st = rep.status()
    progress("")
    sys.stderr.write("\r")
    assert st["keys"] == expect, (st["keys"], expect)
    return rep, st["last_full_sync_seconds"], st["keys"]


def full_resyncs(master, rep, r, times):
    """Make ``rep`` do ``times`` more full syncs (the link cut, a full sync asked for)."""
    for n in range(times):
        done = rep.status()["full_syncs"]
        rep._force_full = True  # what a command it cannot apply does: the next sync is full
        r.cmd(["CLIENT", "KILL", "TYPE", "replica"])
        while rep.status()["full_syncs"] == done:
            progress(f"full resync {n + 1}/{times}: {rep.status()['state']}")
            gevent.sleep(0.1)


def populate_hashes(r, n, fields=10):
    batch = []
    for i in range(n):
        args = ["HSET", f"hash:{i}"]
        for f in range(fields):
            args += [f"field{f}", f"value{f}-{i}"]
        batch.append(args)
        if len(batch) == 1000:
            r.cmd(batch)
            batch = []
    if batch:
        r.cmd(batch)


def apply_rate(master, rep, requests, pipeline):
    """redis-benchmark writes; sample applied commands and lag every 0.1 s."""
    bench = shutil.which("redis-benchmark")
    r = Redis.from_url(master.url, timeout=60)
    start_applied = rep.status()["commands_applied"]
    pending = []  # (time, master offset) samples not yet reached
    max_lag_s, max_lag_bytes, samples = 0.0, 0, 0
    if bench:
        proc = subprocess.Popen(
            [
                bench,
                "-h",
                "127.0.0.1",
                "-p",
                str(master.port),
                "-t",
                "set,lpush,hset",
                "-n",
                str(requests),
                "-P",
                str(pipeline),
                "-r",
                "100000",
                "-c",
                "20",
                "-q",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        done = lambda: proc.poll() is not None
        writer = f"redis-benchmark -t set,lpush,hset -P {pipeline} -c 20 -r 100000"
    else:  # a gevent writer instead

        def write():
            for i in range(0, requests, 300):
                r.cmd([["SET", f"key:{i + j}", "xxx"] for j in range(300)])

        g = gevent.spawn(write)
        done = g.ready
        writer = "gevent writer (SET x300 batches)"
    t0 = time.perf_counter()
    cpu0 = time.process_time()
    last_count = start_applied
    while True:
        now = time.perf_counter()
        moff = int(info(r, "replication")["master_repl_offset"])
        st = rep.status()
        ours = st["offset"]
        pending.append((now, moff))
        while pending and ours >= pending[0][1]:
            max_lag_s = max(max_lag_s, now - pending[0][0])
            pending.pop(0)
        if pending:
            max_lag_s = max(max_lag_s, now - pending[0][0])
        max_lag_bytes = max(max_lag_bytes, moff - ours)
        samples += 1
        applied = st["commands_applied"] - start_applied
        rate = applied / max(now - t0, 1e-9)
        progress(
            f"stream: {applied:,} applied, {rate:,.0f}/s, lag {moff - ours:,} bytes, max lag {max_lag_s:.2f}s"
        )
        if done() and ours >= moff:
            break
        last_count = applied
        gevent.sleep(0.1)
    # from the writer's start until we had applied all it wrote
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    applied = rep.status()["commands_applied"] - start_applied
    out = proc.stdout.read().decode() if bench else ""
    progress("")
    sys.stderr.write("\r")
    r.close()
    del last_count
    return applied, elapsed, cpu, max_lag_s, max_lag_bytes, samples, writer, out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strings", type=int, default=1_000_000)
    ap.add_argument("--hashes", type=int, default=100_000)
    ap.add_argument("--resyncs", type=int, default=5, help="full resyncs for the RSS row")
    ap.add_argument(
        "--bench-requests", type=int, default=1_000_000, help="redis-benchmark -n per test (3 tests)"
    )
    args = ap.parse_args(argv)
    rows = []
    master = RedisServer(debug=True, args=["--repl-diskless-sync", "no"]).start()
    try:
        r = Redis.from_url(master.url, timeout=600)

        # 1. strings ------------------------------------------------------------------
        progress(f"populating {args.strings:,} strings")
        r.cmd(["DEBUG", "POPULATE", args.strings])
        used = int(info(r, "memory")["used_memory"])
        startup = int(info(r, "memory")["used_memory_startup"])
        redis_s, size, d = redis_own_load(master)
        gc.collect()
        rss0 = rss_bytes()  # first big allocation of this process: RSS growth is the copy
        gaps = []
        rep, ours_s, n = full_sync(master, "strings", args.strings, gaps)
        gc.collect()
        rss1 = rss_bytes()
        ours, theirs = alternate(master, rep, r, n, ours_s, "strings")
        resyncs = max(args.resyncs, 2)  # the 2 timed ones count
        full_resyncs(master, rep, r, resyncs - 2)
        rss5 = rss_bytes()  # no gc.collect(): reference counting alone must free old copies
        mem = (rss1 - rss0, used, used - startup, rss5 - rss0)
        rep.stop()
        del rep
        gc.collect()
        parse_s, _ = parse_file(os.path.join(d, "dump.rdb"))
        floors = dict_floors(os.path.join(d, "dump.rdb"))
        shutil.rmtree(d, ignore_errors=True)
        strings_theirs = theirs
        rows.append((f"{n:,} strings ({size / 1e6:.0f} MB RDB)", ours, theirs, n, redis_s, parse_s))

        # 2. hashes ---------------------------------------------------------------------
        r.cmd(["FLUSHALL"])
        progress(f"populating {args.hashes:,} hashes")
        populate_hashes(r, args.hashes)
        enc = r.cmd(["OBJECT", "ENCODING", "hash:0"]).decode()
        redis_s, size, d = redis_own_load(master)
        parse_s, _ = parse_file(os.path.join(d, "dump.rdb"))
        shutil.rmtree(d, ignore_errors=True)
        rep, ours_s, n = full_sync(master, "hashes", args.hashes)
        ours, theirs = alternate(master, rep, r, n, ours_s, "hashes")
        read_s = read_every_hash(rep, args.hashes)
        rows.append((f"{n:,} hashes x10 ({enc}, {size / 1e6:.0f} MB)", ours, theirs, n, redis_s, parse_s))

        # 3. the command stream -----------------------------------------------------------
        streams = [
            apply_rate(master, rep, args.bench_requests, 16),
            apply_rate(master, rep, args.bench_requests // 4, 1),
        ]
        rep.stop()
    finally:
        master.close()

    print(
        f"# greenredis replica benchmark - {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{platform.machine()} {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"redis-server 7.0 on 127.0.0.1 (shared machine: numbers are noisy)"
    )
    print()
    print(
        "| full sync (3 each, alternating: median (min-max)) | greenredis s | keys/s "
        "| redis-server replica s | greenredis / redis replica | parser alone keys/s "
        "| redis-server load at startup s | greenredis / startup load |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for label, ours, theirs, n, startup_s, parse_s in rows:
        mine, real = statistics.median(ours), statistics.median(theirs)
        vs_load = f"{mine / startup_s:.2f}x" if startup_s > 0 else "-"
        # its log has ms timestamps: a tiny dataset can sync "in 0 s"
        vs_real = (
            f"{mine / real:.2f}x ({min(ours) / max(theirs):.2f}-{max(ours) / min(theirs):.2f})"
            if min(theirs) > 0
            else "-"
        )
        print(
            f"| {label} | {median_range(ours)} | {n / mine:,.0f} | {median_range(theirs)} | {vs_real} "
            f"| {n / parse_s:,.0f} | {startup_s:.2f} | {vs_load} |"
        )
    print()
    real = statistics.median(strings_theirs)
    print(
        f"| building the same {args.strings:,}-key dict, no parsing (3 each) | s "
        "| / redis-server replica's sync |"
    )
    print("|---|---:|---:|")
    for label, times in zip(
        ("pure-Python floor: two slices + a dict insert per key, offsets known", "C floor: pickle.loads"),
        floors,
    ):
        print(f"| {label} | {median_range(times)} | {statistics.median(times) / real:.2f}x |")
    print()
    print("| after the hash load | seconds | hashes/s |")
    print("|---|---:|---:|")
    print(
        f"| reading every hash once (Replica.get of {args.hashes:,}) | {read_s:.2f} "
        f"| {args.hashes / read_s:,.0f} |"
    )
    print()
    rss, used, dataset, rss_after = mem
    print(f"| memory, {args.strings:,} strings | bytes | local / master |")
    print("|---|---:|---:|")
    print(f"| master used_memory | {used / 1e6:,.1f} MB | |")
    print(f"| local copy (RSS growth) | {rss / 1e6:,.1f} MB | {rss / used:.2f}x |")
    print(
        f"| RSS growth after {resyncs} more full resyncs (goal: within 1.3x of one copy) "
        f"| {rss_after / 1e6:,.1f} MB | {rss_after / used:.2f}x ({rss_after / max(rss, 1):.2f}x one copy) |"
    )
    print()
    print(f"| process, {args.strings:,}-string load | value |")
    print("|---|---:|")
    print(
        f"| longest stall of a 10 ms ticker greenlet during the load (goal < 100 ms) "
        f"| {max(w for w, _ in gaps) * 1000:.0f} ms wall, {max(c for _, c in gaps) * 1000:.0f} ms "
        f"of this process's CPU ({len(gaps)} ticks) |"
    )
    print()
    for applied, elapsed, cpu, lag_s, lag_b, samples, writer, bench_out in streams:
        print(f"| stream: {writer} | value |")
        print("|---|---:|")
        print(f"| commands applied (writer start to caught up) | {applied:,} in {elapsed:.2f}s |")
        print(f"| apply rate (end to end) | {applied / elapsed:,.0f} commands/s |")
        print(
            f"| this process's CPU (time.process_time()) | {cpu:.2f} s: {cpu / applied * 1e6:.2f} us "
            f"per command, {cpu / applied * 300_000:.2f} s per 300k ({applied / cpu:,.0f} commands/CPU s) |"
        )
        print(f"| max lag behind master_repl_offset | {lag_s:.2f} s, {lag_b:,} bytes ({samples} samples) |")
        if bench_out:
            lines = [
                ln.strip().split(", p50")[0]
                for ln in bench_out.replace("\r", "\n").splitlines()
                if "requests per second" in ln
            ]
            print(f"| master write rate (redis-benchmark) | {'; '.join(lines)} |")
        print()


if __name__ == "__main__":
    main()
