"""Measure how long a failover keeps writes away, greenredis against redis-py, in one run.

One local group (a master, two replicas, three sentinels; down-after-milliseconds 1000).
Per trial, a greenredis ``Sentinel.master_for`` client and a redis-py
``redis.sentinel.Sentinel.master_for`` client each write every 2 ms (a MULTI of SET and
INFO server, so each acknowledged write names the node that ran it); then the master is
failed over with ``SENTINEL FAILOVER`` (or SIGKILLed). Reported per client: the time from
that moment to the first write acknowledged by the *new* master (a write the old master
acknowledged after the promotion is not one: Redis drops it when the old master resyncs),
and the gap between the first ``+switch-master`` any sentinel announced and greenredis's
first such write (negative: greenredis got there first; it also listens to the leader's
``+promoted-slave``). N trials per kind (``--trials``, default 10); median and max.

The old master is left for the sentinels to demote (they take 8-20 s), as in production:
a forced trial lasts ~20 s.

Usage: .venv/bin/python scripts/bench_failover.py [--trials 10] [--kinds forced,kill]
"""

from gevent import monkey

monkey.patch_all()  # redis-py is blocking: make its sockets cooperative too

import argparse  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import gevent  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import redis  # noqa: E402
import redis.sentinel  # noqa: E402

import greenredis  # noqa: E402
from greenredis.server import SentinelGroup  # noqa: E402

WRITE_EVERY = 0.002
GIVE_UP = 60.0  # seconds a trial waits for a client's first write on the new master


def _port_of(info_text):
    for line in info_text.splitlines():
        if line.startswith("tcp_port:"):
            return int(line.split(":", 1)[1])
    return None


class Writer:
    """A greenlet writing through one client; ``acks`` holds (monotonic time, node port)."""

    def __init__(self, name, write):
        self.name = name
        self.write = write
        self.acks = []
        self.errors = 0
        self.stop = False
        self.greenlet = gevent.spawn(self._run)

    def _run(self):
        i = 0
        while not self.stop:
            i += 1
            try:
                port = self.write(i)
                self.acks.append((time.monotonic(), port))
            except Exception:
                self.errors += 1
            gevent.sleep(WRITE_EVERY)

    def first_on(self, port, after):
        return next((t for t, p in self.acks if t > after and p == port), None)

    def close(self):
        self.stop = True
        self.greenlet.join(timeout=10)


def greenredis_writer(group):
    s = greenredis.Sentinel(group.sentinel_addresses, failover_timeout=GIVE_UP)
    r = s.master_for(group.service, timeout=0.5)

    def write(i):
        _, info = r.transaction([["SET", "bench:gr", i], ["INFO", "server"]])
        return _port_of(info.decode())

    return Writer("greenredis", write), (r, s)


def redispy_writer(group):
    s = redis.sentinel.Sentinel(group.sentinel_addresses, socket_timeout=0.5)
    r = s.master_for(group.service, socket_timeout=0.5)

    def write(i):
        pipe = r.pipeline(transaction=True)
        pipe.set("bench:py", i)
        pipe.info("server")
        _, info = pipe.execute()
        return int(info["tcp_port"])

    return Writer("redis-py", write), (r, s)


class SwitchClock:
    """The first +switch-master any sentinel announces after ``arm()``."""

    def __init__(self, group):
        self.at = None
        self.armed = False
        self.clients = [greenredis.Redis(port=s.port) for s in group.sentinels]
        self.subs = [c.subscribe("+switch-master") for c in self.clients]
        self.greenlets = [gevent.spawn(self._listen, sub) for sub in self.subs]

    def arm(self):
        self.at, self.armed = None, True

    def _listen(self, sub):
        for message in sub:
            if message.kind == b"message" and self.armed and self.at is None:
                self.at = time.monotonic()

    def close(self):
        for sub in self.subs:
            sub.close()
        for c in self.clients:
            c.close()
        gevent.killall(self.greenlets)


def trial(group, kind, clock):
    group.wait_settled(60)
    writers, owned = [], []
    for make in (greenredis_writer, redispy_writer):
        w, o = make(group)
        writers.append(w)
        owned.append(o)
    deadline = time.monotonic() + 10
    while not all(w.acks for w in writers) and time.monotonic() < deadline:
        gevent.sleep(0.01)
    old, epoch = group.master, group.config_epoch()
    clock.arm()
    t0 = time.monotonic()
    if kind == "forced":
        group._wait(group._ask_failover, 30, "SENTINEL FAILOVER to be accepted")
    else:
        old.kill()
    new = group._wait(
        lambda: group.config_epoch() > epoch and group._agreed_master(), 60, "the sentinels to agree"
    )
    end = time.monotonic() + GIVE_UP
    while time.monotonic() < end and not all(w.first_on(new, t0) for w in writers):
        gevent.sleep(0.01)
    result = {w.name: (w.first_on(new, t0) or float("nan")) - t0 for w in writers}
    result["switch"] = (clock.at - t0) if clock.at else float("nan")
    for w in writers:
        w.close()
    for r, s in owned:
        r.close()
        if hasattr(s, "close"):
            s.close()
    if kind == "kill":
        group.heal(60)
    else:
        group.wait_settled(60)
    return result


# --- HOOK: the replica's full-vs-partial resync row ---------------------------------------
# The `failover` branch fills this in: run a greenredis.Replica of the group through
# `trials` forced failovers and return (label, partial, full) for the table below.
def replica_resync_rows(group, trials):
    return []


# ------------------------------------------------------------------------------------------


def summary(values):
    ok = [v for v in values if v == v]  # NaN: the client never wrote to the new master
    if not ok:
        return "never"
    missed = len(values) - len(ok)
    text = f"{statistics.median(ok) * 1000:8.0f} {max(ok) * 1000:8.0f}"
    return text + (f"  ({missed} never)" if missed else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--kinds", default="forced,kill", help="comma-separated: forced, kill")
    args = ap.parse_args()
    kinds = [k for k in args.kinds.split(",") if k]
    for k in kinds:
        if k not in ("forced", "kill"):
            ap.error(f"unknown kind {k!r}: forced or kill")
    print(f"# {platform.node()} {platform.platform()} {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}")
    print(
        f"# redis-py {redis.__version__}, greenredis {greenredis.__version__}, {args.trials} trials per kind"
    )
    with SentinelGroup(replicas=2, sentinels=3, down_after_ms=1000) as group:
        clock = SwitchClock(group)
        rows = {}
        for kind in kinds:
            rows[kind] = []
            for n in range(args.trials):
                r = trial(group, kind, clock)
                rows[kind].append(r)
                ms = {k: f"{v * 1000:.0f} ms" for k, v in r.items()}
                print(
                    f"  {kind} {n + 1}: greenredis {ms['greenredis']}, redis-py {ms['redis-py']}, "
                    f"first +switch-master {ms['switch']}",
                    file=sys.stderr,
                )
        replica = replica_resync_rows(group, args.trials)
        clock.close()
    print("\nms from the failover to the first write on the new master   median      max")
    for kind, results in rows.items():
        what = "SENTINEL FAILOVER" if kind == "forced" else "SIGKILL of the master"
        for name in ("greenredis", "redis-py"):
            print(f"  {what:24} {name:12}{'':22} {summary([r[name] for r in results])}")
        gaps = [r["greenredis"] - r["switch"] for r in results]
        print(f"  {what:24} greenredis - first +switch-master{'':1} {summary(gaps)}")
    for label, partial, full in replica:
        print(f"  {label}: {partial} partial, {full} full resyncs")


if __name__ == "__main__":
    main()
