"""How fast the Applier applies replicated commands (no server, no network).

    .venv/bin/python scripts/bench_applier.py [N]

Prints commands/s for typical streams: a SET/HSET/INCR/LPUSH mix (also through
hiredis.Reader, as the replica reads them), SET ... PXAT, XADD, small MULTI/EXEC bodies,
and transactions on a 100k-item list (the undo log must not copy it).
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


def main():
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
