"""The replica through Sentinel failovers: full vs partial resyncs, and how long it is away.

A SentinelGroup (master, 2 replicas, 3 sentinels, down-after 1000 ms) and one
``greenredis.Replica("redis+sentinel://...")``. Each trial writes a batch (INCRs and a
hash) on the current master, waits until the replicas have it, then ``SENTINEL FAILOVER``
with no writes on the old master after the promotion (the old master still propagates
the sentinels' hellos and PINGs: the trap of issue 13). Counted per trial: did the replica
continue (+CONTINUE) or load a full resync; seconds from the SENTINEL FAILOVER command to
the replica streaming from the new master; the local copy equal to the new master on the
trial's keys; whether the old master had sent the replica bytes (hellos, PINGs) past what the
new master holds of the old history (then asking from the last byte, as 0.2.0 did, gets a
full resync).

Usage: .venv/bin/python scripts/bench_replica_failover.py [--trials 10]
(``run_trials(group, trials)`` is what scripts/bench_failover.py calls for its replica row.)
"""

import argparse
import os
import platform
import statistics
import sys
import time

import gevent

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from greenredis.client.redis import Redis
from greenredis.replication.replica import Replica
from greenredis.server import SentinelGroup


def _client(server):
    return Redis.from_url(f"redis://127.0.0.1:{server.port}/0", timeout=10)


def _offset(r, field):
    text = r.cmd(["INFO", "replication"]).decode()
    return int(dict(line.split(":", 1) for line in text.splitlines() if ":" in line)[field])


def _wait(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"waited {timeout}s for {what}")
        gevent.sleep(0.005)


def run_trials(group, trials=10, log=print):
    """``trials`` forced failovers of ``group`` followed by one Replica; a dict of results."""
    rep = Replica(group.url, backoff=(0.05, 0.5))
    rep.start(timeout=60)
    results = []
    try:
        for trial in range(trials):
            master = group.wait_settled()
            r = _client(master)
            try:
                r.cmd([["INCR", f"n:{i}"] for i in range(100)] + [["HSET", "h", "trial", trial]])
                target = _offset(r, "master_repl_offset")
            finally:
                r.close()
            for server in group.replicas:
                c = _client(server)
                try:
                    _wait(
                        lambda c=c, target=target: _offset(c, "slave_repl_offset") >= target,
                        30,
                        "the replicas to catch up",
                    )
                finally:
                    c.close()
            _wait(lambda target=target: rep.status()["offset"] >= target, 30, "the replica to catch up")
            before = rep.status()
            highest = [before["offset"]]
            old_address = f"127.0.0.1:{master.port}"

            def sample(highest=highest, old_address=old_address):
                while True:
                    st = rep.status()
                    if st["master"] == old_address:
                        highest[0] = max(highest[0], st["offset"])
                    gevent.sleep(0.001)

            sampler = gevent.spawn(sample)
            started = time.monotonic()
            new = group.failover()
            address = f"127.0.0.1:{new.port}"
            _wait(
                lambda address=address: (
                    rep.status()["master"] == address and rep.status()["state"] == "streaming"
                ),
                30,
                "the replica to follow the new master",
            )
            away = time.monotonic() - started
            sampler.kill()
            st = rep.status()
            partial = st["partial_resyncs"] - before["partial_resyncs"]
            full = st["full_syncs"] - before["full_syncs"]
            r = _client(new)
            try:
                # PINGs/hellos from the old master past what the new one has of the old history:
                # PSYNC from the last byte (0.2.0) would have been a full resync
                limit = _offset(r, "second_repl_offset") - 1
                trap = highest[0] > limit
                equal = rep.get("h") == {b"trial": str(trial).encode()} and all(
                    rep.get(f"n:{i}") == r.cmd(["GET", f"n:{i}"]) for i in range(100)
                )
            finally:
                r.close()
            results.append({"partial": partial, "full": full, "seconds": away, "equal": equal, "trap": trap})
            log(
                f"trial {trial + 1}: {'partial' if partial and not full else 'FULL'} resync, "
                f"streaming from the new master {away:.2f}s after SENTINEL FAILOVER, copy equal: {equal}, "
                f"old master sent past the new one's replid2 limit: {trap} ({highest[0]} > {limit})"
            )
    finally:
        rep.stop()
    seconds = [x["seconds"] for x in results]
    return {
        "trials": len(results),
        "partial": sum(1 for x in results if x["partial"] and not x["full"]),
        "full": sum(x["full"] for x in results),
        "equal": sum(x["equal"] for x in results),
        "trap": sum(x["trap"] for x in results),
        "median_s": statistics.median(seconds) if seconds else None,
        "max_s": max(seconds) if seconds else None,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=10)
    args = ap.parse_args()
    with SentinelGroup(service="mymaster", replicas=2, sentinels=3) as group:
        res = run_trials(group, args.trials)
    print()
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    print(f"{time.strftime('%Y-%m-%d')} {machine}")
    print(
        "| replica, forced failovers | partial | full | copy equal | sent past the limit | away, median/max |"
    )
    print("|---|---:|---:|---:|---:|---|")
    print(
        f"| {res['trials']} trials | {res['partial']} / {res['trials']} | {res['full']} | "
        f"{res['equal']} / {res['trials']} | {res['trap']} | {res['median_s']:.2f} / {res['max_s']:.2f} s |"
    )
    return 0 if res["partial"] == res["trials"] else 1


if __name__ == "__main__":
    sys.exit(main())
