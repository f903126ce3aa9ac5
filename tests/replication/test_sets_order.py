"""Sets keep Redis's encoding and iteration order: an intset in numeric order, a 7.2+
(Valkey) listpack in insertion order, through every conversion ``t_set.c`` makes; SORT's
ties show that order, so the applier's SORT ... STORE matches the server's."""

import random

from greenredis.client.redis import Redis
from greenredis.replication.applier import Applier
from greenredis.replication.keyspace import Set


class Twin:
    """A server and an Applier fed the same commands (these propagate verbatim)."""

    def __init__(self, server):
        self.r = Redis.from_url(server.url)
        self.ap = Applier()
        version = self.r.cmd(["INFO", "server"]).decode()
        self.listpack_sets = "valkey_version" in version or _version(version) >= (7, 2)

    def run(self, *argv):
        argv = [a if isinstance(a, bytes) else str(a).encode() for a in argv]
        self.r.cmd(argv)
        self.ap.apply(argv)

    def picture(self, key):
        """(encoding, members in iteration order, or sorted for a hashtable) on both sides."""
        ours = self.ap.keyspace.db(0).data.get(key)
        assert type(ours) is Set, (key, ours)
        encoding = ours.encoding
        if encoding == "listpack" and not self.listpack_sets:
            encoding = "hashtable"  # before 7.2: intset or hashtable
        mine = (encoding, ours.ordered() if encoding != "hashtable" else sorted(ours))
        enc = self.r.cmd(["OBJECT", "ENCODING", key]).decode()
        members = self.r.cmd(["SMEMBERS", key])
        return mine, (enc, members if enc != "hashtable" else sorted(members))


def _version(info):
    line = next(x for x in info.splitlines() if x.startswith("redis_version:"))
    return tuple(int(p) for p in line.split(":")[1].split(".")[:2])


def test_every_set_command_keeps_the_servers_encoding_and_order(any_server):
    t = Twin(any_server)
    rnd = random.Random(7)
    pool = [b"a", b"b", b"c", b"d", b"e", b"7", b"-3", b"12", b"0", b"x" * 65, b"007"]
    keys = [b"s:%d" % i for i in range(4)]
    for n in range(400):
        key = rnd.choice(keys)
        c = rnd.random()
        if c < 0.4:
            t.run("SADD", key, *rnd.sample(pool, rnd.randint(1, 4)))
        elif c < 0.45:
            t.run("SADD", key, *[b"%d" % rnd.randrange(-50, 50) for _ in range(rnd.randint(1, 6))])
        elif c < 0.6:
            t.run("SREM", key, *rnd.sample(pool, 2))
        elif c < 0.7:
            t.run("SMOVE", key, rnd.choice(keys), rnd.choice(pool))
        else:
            inputs = rnd.sample(keys, rnd.randint(1, 3))
            if any(t.r.cmd(["OBJECT", "ENCODING", k]) == b"hashtable" for k in inputs):
                continue  # the result comes in hash order: not even a real replica has it
            op = "SINTERSTORE" if c < 0.8 else "SUNIONSTORE" if c < 0.9 else "SDIFFSTORE"
            t.run(op, key, *inputs)
        for k in keys:
            if t.r.cmd(["EXISTS", k]):
                mine, theirs = t.picture(k)
                assert mine == theirs, (n, k, mine, theirs)
            else:
                assert k not in t.ap.keyspace.db(0).data


def test_conversions_at_the_size_limits(any_server):
    t = Twin(any_server)
    t.run("SADD", "ints", *range(512))  # an intset at its limit
    assert t.picture(b"ints")[0] == t.picture(b"ints")[1]
    t.run("SADD", "ints", 512)  # one more: a hashtable
    assert (
        t.picture(b"ints")[0] == t.picture(b"ints")[1] == ("hashtable", sorted(b"%d" % i for i in range(513)))
    )
    t.run("SADD", "mixed", *range(127, 0, -1))
    t.run("SADD", "mixed", "word")  # an intset of 127 takes a word: a listpack in numeric order
    t.run("SADD", "mixed", "more")  # 129 members: a hashtable
    t.run("SADD", "big", *[f"m{i}" for i in range(129)])  # created past the listpack limit
    t.run("SADD", "hint", "a")
    t.run("SADD", "hint", *["a"] * 129)  # setTypeMaybeConvert: the size hint alone converts
    for key in (b"mixed", b"big", b"hint"):
        mine, theirs = t.picture(key)
        assert mine == theirs, (key, mine, theirs)


def test_sort_ties_come_in_the_servers_order(any_server):
    """SORT BY a missing key ALPHA with LIMIT: every element ties, so the stored list is
    the partial quicksort's order of the set's iteration order."""
    t = Twin(any_server)
    rnd = random.Random(3)
    sources = {"iset": [b"%d" % rnd.randrange(-99, 99) for _ in range(12)]}
    if t.listpack_sets:
        sources["lset"] = [b"m%d" % i for i in rnd.sample(range(40), 12)] + [b"5", b"-1"]
    for src, members in sources.items():
        t.run("SADD", src, *members)
        t.run("SREM", src, members[3])
        for start, count in [(0, 5), (2, 4), (1, 20)]:
            for desc in ([], ["DESC"]):
                t.run("SORT", src, "BY", "nokey:*", "ALPHA", *desc, "LIMIT", start, count, "STORE", "out")
                want = t.r.cmd(["LRANGE", "out", 0, -1])
                assert list(t.ap.keyspace.db(0).data[b"out"]) == want, (src, start, count, desc)
