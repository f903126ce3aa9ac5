"""PFADD/PFCOUNT/PFMERGE against a master for N seconds (default 60) with a Replica attached;
prints the full resyncs (must stay 1) and whether every HLL on the copy equals the master's.

    .venv/bin/python scripts/soak_hll.py [seconds] [--valkey]
"""

import random
import sys
import time

from greenredis.client.redis import Redis
from greenredis.replication.replica import Replica
from greenredis.server import RedisServer, find_valkey_server


def main():
    seconds = float(next((a for a in sys.argv[1:] if not a.startswith("-")), 60))
    binary = find_valkey_server() if "--valkey" in sys.argv else None
    with RedisServer(binary=binary, args=["--repl-diskless-sync-delay", "0"]) as master:
        r = Redis.from_url(master.url, timeout=30)
        rep = Replica(master.url)
        rep.start(timeout=30)
        rnd = random.Random(1)
        keys = [b"hll:%d" % i for i in range(50)]
        counts = {"PFADD": 0, "PFCOUNT": 0, "PFMERGE": 0}
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            key = rnd.choice(keys)
            x = rnd.random()
            if x < 0.6:
                n = rnd.choice([1, 2, 5, 50, 500])
                r.cmd([b"PFADD", key, *[b"%d" % rnd.randrange(10**9) for _ in range(n)]])
                counts["PFADD"] += 1
            elif x < 0.95:
                r.cmd([b"PFCOUNT", key])
                counts["PFCOUNT"] += 1
            else:
                r.cmd([b"PFMERGE", key, rnd.choice(keys)])
                counts["PFMERGE"] += 1
        r.cmd([b"WAIT", b"1", b"10000"])
        time.sleep(1)
        same = all(rep.get(k) == r.cmd([b"GET", k]) for k in keys)
        st = rep.status()
        print(f"{seconds:.0f} s: {counts}; full_syncs={st['full_syncs']}; copy equals master: {same}")
        rep.stop()
        r.close()


if __name__ == "__main__":
    main()
