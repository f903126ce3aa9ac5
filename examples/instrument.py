"""Instrument your own app: join the grid, publish metrics, send your logs to Tempo.

    REDIS_URL=redis://127.0.0.1:6379 python examples/instrument.py --seconds 30

Then open the dashboard (``greenredis web``): the instance ``myapp.1`` is listed, its
page charts ``requests_per_sec`` and its logs page shows the lines logged below.
"""

import gevent.monkey

gevent.monkey.patch_all()  # first: your program's job, greenredis patches nothing

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402

import gevent  # noqa: E402

import greenredis  # noqa: E402
from greenredis.telemetry.names import log_key  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", default=os.environ.get("DYNO", "myapp.1"))
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()

    r = greenredis.Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    grid = greenredis.Grid(
        r, name=args.name, meta={"role": "web"}, ttl=30, interval=5
    )  # as GRID_TTL/INTERVAL
    stats = greenredis.Stats(r, instance=args.name)
    handler = greenredis.RedisLogHandler(r, log_key(args.name), cap=1000)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    log = logging.getLogger("myapp")
    log.setLevel(logging.INFO)
    log.addHandler(handler)

    grid.start()
    log.info("%s started", args.name)
    try:
        for tick in range(int(args.seconds)):
            stats.publish("requests_per_sec", round(random.uniform(80, 120), 1))
            log.info("tick %d: served some requests", tick)
            gevent.sleep(1)
    finally:
        log.info("%s stopping", args.name)
        handler.close(timeout=2)  # send what is buffered
        grid.stop()  # leave: peers and Tempo drop it at once
        r.close()


if __name__ == "__main__":
    main()
