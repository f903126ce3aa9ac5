"""How fast the Applier applies replicated commands (no server, no network).

    .venv/bin/python scripts/bench_applier.py [N]
    .venv/bin/python scripts/bench_applier.py --write-stream N FILE
    .venv/bin/python scripts/bench_applier.py --stream FILE READ_BYTES

Prints commands/s for typical streams: a SET/HSET/INCR/LPUSH mix (also through
hiredis.Reader, as the replica reads them), a stream shaped like redis-benchmark -t
set,lpush,hset's through ReplicaProtocol + apply_all in 8 and 64 KiB reads, SET ... PXAT,
XADD, small MULTI/EXEC bodies, and transactions on a 100k-item list (the undo log must not
copy it).

``--write-stream N FILE`` writes that stream (N commands of each kind) to FILE;
``--stream FILE READ_BYTES`` replays a file once and prints its CPU seconds. For callgrind
(the machine is shared: instructions, not seconds), run ``--stream`` on a file of N and one
of 0 and divide the difference of the two instruction counts by 3N: start-up cancels and
building the input is not counted.
"""

import random
import sys
import time

import hiredis

from greenredis.replication.applier import Applier
from greenredis.replication.protocol import ReplicaProtocol


def rate(label, commands, unit="commands"):
    applier = Applier()
    apply = applier.apply
    start = time.perf_counter()
    for argv in commands:
        apply(argv)
    seconds = time.perf_counter() - start
    print(f"{label:48s} {len(commands) / seconds:>12,.0f} {unit}/s")


def resp(argv):
    return b"*%d\r\n" % len(argv) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in argv)


def redis_benchmark_stream(n):
    """The replication stream of redis-benchmark -t set,lpush,hset -r 100000 (n of each, in
    its order: the SETs, then the LPUSHes, then the HSETs), as the master sends it."""
    rnd = random.Random(1)
    parts = [resp([b"SELECT", b"0"])]
    parts += [resp([b"SET", b"key:%012d" % rnd.randrange(100_000), b"xxx"]) for _ in range(n)]
    parts += [resp([b"LPUSH", b"mylist", b"xxx"]) for _ in range(n)]
    parts += [resp([b"HSET", b"myhash", b"element:%012d" % rnd.randrange(100_000), b"xxx"]) for _ in range(n)]
    return b"".join(parts)


def replay(blob, read_bytes):
    """Through ReplicaProtocol + apply_all, as the replica applies it: (commands, CPU seconds)."""
    applier = Applier()
    proto = ReplicaProtocol(offset=0)
    proto._start_stream()  # as after a full sync
    start = time.process_time()
    for i in range(0, len(blob), read_bytes):
        for event in proto.receive_data(blob[i : i + read_bytes]):
            applier.apply_all(event.argvs)
    return applier.applied, time.process_time() - start


def main():
    if sys.argv[1:2] == ["--write-stream"]:
        with open(sys.argv[3], "wb") as f:
            f.write(redis_benchmark_stream(int(sys.argv[2])))
        return
    if sys.argv[1:2] == ["--stream"]:
        with open(sys.argv[2], "rb") as f:
            blob = f.read()
        applied, cpu = replay(blob, int(sys.argv[3]))
        print(f"{applied:,} commands in {cpu:.3f} CPU s")
        return
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 400_000
    rnd = random.Random(1)
    mix = []
    for i in range(n):
        key = b"key:%d" % rnd.randint(0, 10_000)
        kind = i % 4
        if kind == 0:
            mix.append([b"SET", key, b"value-%d" % i])
        elif kind == 1:
            mix.append([b"HSET", b"h" + key, b"field%d" % (i % 10), b"v"])
        elif kind == 2:
            mix.append([b"INCR", b"n" + key])
        else:
            mix.append([b"LPUSH", b"l" + key, b"item"])
    rate("SET/HSET/INCR/LPUSH mix", mix)

    blob = b"".join(resp(argv) for argv in mix)
    applier = Applier()
    reader = hiredis.Reader()
    start = time.perf_counter()
    for i in range(0, len(blob), 65536):
        reader.feed(blob[i : i + 65536])
        while (argv := reader.gets()) is not False:
            applier.apply(argv)
    print(
        f"{'same, parsed by hiredis.Reader first':48s} {n / (time.perf_counter() - start):>12,.0f} commands/s"
    )

    # as the replica does it: offsets and MULTI/SELECT tracking by ReplicaProtocol, then
    # apply_all on each batch of commands a chunk completes
    applier = Applier()
    proto = ReplicaProtocol(offset=0)
    proto._start_stream()  # as after a full sync
    start = time.perf_counter()
    for i in range(0, len(blob), 65536):
        for event in proto.receive_data(blob[i : i + 65536]):
            applier.apply_all(event.argvs)
    print(
        f"{'same, through ReplicaProtocol + apply_all':48s} "
        f"{n / (time.perf_counter() - start):>12,.0f} commands/s"
    )

    blob = redis_benchmark_stream(n // 3)
    for read_bytes in (8192, 65536):
        applied, cpu = replay(blob, read_bytes)
        label = f"redis-benchmark stream, {read_bytes // 1024} KiB reads"
        print(f"{label:48s} {applied / cpu:>12,.0f} commands/CPU s")

    rate("SET k v PXAT ms", [[b"SET", b"k%d" % i, b"v", b"PXAT", b"4102444800000"] for i in range(n // 2)])
    rate("XADD with explicit ids", [[b"XADD", b"x", b"%d-0" % (i + 1), b"f", b"v"] for i in range(n // 2)])
    tx = []
    for i in range(n // 8):
        tx += [[b"MULTI"], [b"INCR", b"a"], [b"LPUSH", b"l%d" % (i % 100), b"x"], [b"EXEC"]]
    rate("MULTI / INCR / LPUSH / EXEC", tx)

    big = Applier()
    big.apply([b"RPUSH", b"big"] + [b"x"] * 100_000)
    rounds = 5000
    start = time.perf_counter()
    for _ in range(rounds):
        big.apply([b"MULTI"])
        big.apply([b"LPUSH", b"big", b"y"])
        big.apply([b"EXEC"])
    print(
        f"{'MULTI / LPUSH / EXEC on a 100k-item list':48s} "
        f"{rounds / (time.perf_counter() - start):>12,.0f} transactions/s"
    )


if __name__ == "__main__":
    main()
