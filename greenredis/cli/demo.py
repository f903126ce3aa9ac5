"""Run simulated instances: each joins the grid, publishes metrics every second and logs.

Instances ``demo-web.1``.. (requests_per_sec, p95_latency_ms, memory_mb, cpu_percent)
and ``demo-worker.1``.. (jobs_per_sec, queue_depth, memory_mb) share one Redis
client. Ctrl-C or SIGTERM makes them leave the grid gracefully (within a few
seconds; if Redis is down it says that peers will expire them instead). While Redis
is unreachable it says so in one line, then retries with backoff. Grid timing comes
from ``$GRID_TTL``/``$GRID_INTERVAL`` (default 30 s / 5 s), which Tempo reads too.
"""

import logging
import math
import os
import random
import time

from greenredis.backoff import Backoff
from greenredis.url import DEFAULT_URL

log = logging.getLogger("greenredis.demo")


def add_arguments(parser):
    parser.add_argument(
        "--url",
        default=os.environ.get("REDIS_URL"),
        help="Redis URL (default: $REDIS_URL, else redis://127.0.0.1:6379)",
    )
    parser.add_argument("--web", type=int, default=3, help="simulated web instances (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="simulated workers (default 2)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between points")
    parser.add_argument("--prefix", default="demo-", help="instance name prefix (default demo-)")


class SimInstance:
    """One simulated process: a grid node, its stats and its log."""

    PATHS = ["/apps", "/apps/{id}", "/apps/{id}/dynos", "/account", "/releases/{id}", "/login"]

    def __init__(self, redis, name, role, seed):
        from greenredis.grid.node import Grid
        from greenredis.grid.timing import grid_timing
        from greenredis.telemetry.caplog import RedisLogHandler
        from greenredis.telemetry.names import log_key
        from greenredis.telemetry.stats import Stats

        self.name, self.role = name, role
        ttl, interval = grid_timing()  # the same timing Tempo's observer reads
        self.rng = random.Random(seed)
        self.grid = Grid(
            redis,
            name=name,
            meta={"role": role, "sim": "demo", "version": f"v{self.rng.randint(40, 60)}"},
            ttl=ttl,
            interval=interval,
        )
        self.stats = Stats(redis, name)
        self.logger = logging.getLogger(f"demo.{name}")
        self.logger.propagate = False
        self.logger.setLevel(logging.INFO)
        self.handler = RedisLogHandler(redis, log_key(name), cap=1000)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-5s %(message)s", "%H:%M:%S"))
        self.logger.addHandler(self.handler)
        self.t0 = time.time()
        self.memory = 80.0 + self.rng.random() * 40
        self.queue = 0.0
        self.jobs = 0

    def start(self):
        self.grid.start()
        self.logger.info("%s starting (role=%s)", self.name, self.role)

    def step(self):
        """Publish this second's points and write a few log lines."""
        t = time.time() - self.t0
        r = self.rng
        wave = 1 + 0.35 * math.sin(t / 30.0 + hash(self.name) % 7)
        self.memory += r.uniform(-0.5, 1.2)
        if self.memory > 220:  # a GC / restart drops memory
            self.memory = 90 + r.random() * 20
            self.logger.warning("memory high, recycling worker pool")
        if self.role == "web":
            rps = max(0.0, 180 * wave + r.gauss(0, 12))
            p95 = max(5.0, 40 / wave + r.gauss(0, 4) + (120 if r.random() < 0.03 else 0))
            points = {
                "requests_per_sec": round(rps, 1),
                "p95_latency_ms": round(p95, 1),
                "memory_mb": round(self.memory, 1),
                "cpu_percent": round(min(100.0, rps / 3 + r.gauss(0, 3)), 1),
            }
            for _ in range(r.randint(1, 4)):
                path = r.choice(self.PATHS).format(id=r.randint(1000, 9999))
                status = r.choices([200, 201, 304, 404, 500], [80, 5, 10, 4, 1])[0]
                ms = max(1, int(r.expovariate(1 / (p95 / 3))))
                level = logging.ERROR if status >= 500 else logging.INFO
                self.logger.log(level, "GET %s %d %dms", path, status, ms)
        else:
            done = max(0, int(r.gauss(25 * wave, 5)))
            self.queue = max(0.0, self.queue + r.gauss(24 * wave, 6) - done)
            self.jobs += done
            points = {
                "jobs_per_sec": done,
                "queue_depth": round(self.queue),
                "memory_mb": round(self.memory, 1),
            }
            self.logger.info("processed %d jobs (total %d), queue %d", done, self.jobs, self.queue)
        for metric, value in points.items():
            self.stats.publish(metric, value)

    def stop(self, timeout=2.0):
        self.logger.info("%s stopping", self.name)
        self.handler.close(timeout=timeout)
        self.grid.stop(timeout=timeout)


def _step(sim):
    """One instance's points; the error instead of raising it (one line for all, not one each)."""
    from greenredis.errors import RedisError

    try:
        sim.step()
    except RedisError as e:
        return e
    return None


def publish_round(sims):
    """Every instance's step at once; the first error, or None."""
    import gevent

    jobs = [gevent.spawn(_step, s) for s in sims]
    gevent.joinall(jobs)
    errors = [j.value for j in jobs if j.value is not None]
    return errors[0] if errors else None


def leave(redis, sims, timeout=2.0):
    """Stop every instance (bounded) and check that their keys are gone; the line to say."""
    import gevent

    from greenredis.errors import RedisError

    # each stop closes its log handler, then leaves the grid: up to ``timeout`` each
    gevent.joinall([gevent.spawn(s.stop, timeout) for s in sims], timeout=2 * timeout + 1)
    try:
        left = redis.cmd([["EXISTS", s.grid.key] for s in sims], timeout=timeout)
    except RedisError as e:
        from greenredis.cli.failures import describe, where

        return (
            f"stopped; could not tell the grid ({describe(e, where(redis))[0]}): "
            f"peers will drop the instances within GRID_TTL"
        )
    still = [s.name for s, n in zip(sims, left) if n]
    if still:
        return f"stopped; {', '.join(still)} could not leave the grid: peers will expire them within GRID_TTL"
    return "stopped; the instances left the grid"


def run(args):
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        monkey.patch_all()
    import gevent

    from greenredis.cli.failures import Fatal, describe, probe, where
    from greenredis.client.redis import Redis

    url = args.url or DEFAULT_URL
    try:
        params = probe(url)
    except Fatal as e:
        if not e.transient:
            raise
        from greenredis.cli.failures import check_url

        params = check_url(url)
    if not getattr(args, "log_level_set", False):
        # the demo's own line says Redis is unreachable; the grid's per-instance lines would repeat it
        logging.getLogger("greenredis.grid").setLevel(logging.ERROR)
        logging.getLogger("greenredis.client").setLevel(logging.ERROR)
    redis = Redis.from_url(url)  # redis+sentinel:// follows the master; redis+cluster:// is a Cluster
    address = where(params)
    sims = [SimInstance(redis, f"{args.prefix}web.{i + 1}", "web", i) for i in range(args.web)]
    sims += [
        SimInstance(redis, f"{args.prefix}worker.{i + 1}", "worker", 100 + i) for i in range(args.workers)
    ]
    for s in sims:
        s.start()
    backoff = Backoff(1.0, 10.0, jitter=0.0)
    failing_since, published = None, False
    next_tick = time.monotonic()
    try:
        while True:
            error = publish_round(sims)
            if error is None:
                if not published:
                    published = True
                    log.info(
                        "%d instances publishing every %gs: %s",
                        len(sims),
                        args.interval,
                        ", ".join(s.name for s in sims),
                    )
                if failing_since is not None:
                    log.info("Redis is back after %.0f s; publishing again", time.monotonic() - failing_since)
                    failing_since = None
                    backoff.reset()
                next_tick += args.interval
                gevent.sleep(max(0.0, next_tick - time.monotonic()))
            else:
                wait = backoff.failure()
                if failing_since is None:
                    failing_since = time.monotonic()
                    log.warning("cannot publish (%s); retrying in %g s", describe(error, address)[0], wait)
                elif wait >= backoff.most:  # rate-limited: once per longest wait
                    log.warning(
                        "still cannot publish (%s) for %.0f s; retrying every %g s",
                        describe(error, address)[0],
                        time.monotonic() - failing_since,
                        wait,
                    )
                gevent.sleep(wait)
                next_tick = time.monotonic()
    finally:
        log.info("%s", leave(redis, sims))
        redis.close()
