"""Watch a Redis replica's link to its master until it is up.

Polls INFO replication on URL (a replica) and prints timestamped lines:
``STATUS: master_link_status:down``, then ``waiting for master_link_status:up``
with the sync progress, until ``STATUS: master_link_status:up`` - the way
operators watched a resync after ``CONFIG SET MASTERAUTH``. Exits 0 when the link
is up, 1 on --timeout, 2 if the server is not a replica.
"""

import time

import gevent

from greenredis.client.redis import Redis


def add_arguments(parser):
    parser.add_argument(
        "url",
        help="the replica to watch, e.g. redis://127.0.0.1:6380, or redis+sentinel://host:port/service"
        " for every replica of a Sentinel service",
    )
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    parser.add_argument(
        "--timeout", type=float, default=None, help="give up after this many seconds (exit 1)"
    )


def parse_info(text):
    """INFO's ``key:value`` lines as a dict of str."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    info = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and ":" in line:
            k, v = line.split(":", 1)
            info[k] = v
    return info


def _client(url):
    r = Redis.from_url(url, timeout=5.0)
    return lambda: r.cmd(["INFO", "replication"])


def progress(info):
    """What a replica says about the sync in progress, in a few words."""
    if info.get("master_sync_in_progress") == "1":
        total = int(info.get("master_sync_total_bytes", "-1") or -1)
        read = int(info.get("master_sync_read_bytes", "0") or 0)
        if total > 0:
            return f"syncing: {read}/{total} bytes ({100.0 * read / total:.0f}%)"
        return f"syncing (diskless): {read} bytes read"
    since = info.get("master_link_down_since_seconds")
    if since in (None, "", "-1"):
        return "never connected since it started"
    return f"link down for {since}s"


class _Watch:
    """One replica's link as lines: each change of STATUS, and the sync's progress while it
    waits (every change, else a reminder every 5 s)."""

    def __init__(self, say, prefix=""):
        self.say, self.prefix = say, prefix
        self.shown = None
        self.last_wait, self.last_wait_at = None, 0.0

    def step(self, info):
        """Print what changed; the replica's ``master_link_status`` or ``"role:<role>"``."""
        if info.get("role") != "slave":
            status = f"role:{info.get('role')}"
            if status != self.shown:
                self.say(f"{self.prefix}STATUS: {status} (not a replica)")
                self.shown = status
            return status
        status = info.get("master_link_status", "?")
        if status != self.shown:
            self.say(
                f"{self.prefix}STATUS: master_link_status:{status} "
                f"(master {info.get('master_host')}:{info.get('master_port')})"
            )
            self.shown = status
        if status != "up":
            line = f"{self.prefix}waiting for master_link_status:up ({progress(info)})"
            if line != self.last_wait or time.monotonic() - self.last_wait_at >= 5:
                self.say(line)
                self.last_wait, self.last_wait_at = line, time.monotonic()
        return status


def _say(out):
    return lambda text: out(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}", flush=True)


def run(args, out=print):
    from greenredis.url import is_sentinel_url

    if is_sentinel_url(args.url):
        return run_sentinel(args, out)
    from greenredis.cli.failures import Fatal, describe, probe, transient

    probe(args.url, 5.0)
    info_of = _client(args.url)
    start = time.monotonic()
    say = _say(out)
    watch = _Watch(say)
    while True:
        try:
            info = parse_info(info_of())
        except Exception as e:
            if not transient(e):  # a wrong password, or not Redis: no use waiting
                raise Fatal(*describe(e, "the replica")) from None
            say(f"cannot read INFO replication: {describe(e, 'the replica')[0]}")
            info = None
        if info is not None:
            status = watch.step(info)
            if status == "up":
                return 0
            if status.startswith("role:"):
                return 2
        if args.timeout is not None and time.monotonic() - start > args.timeout:
            say(f"gave up after {args.timeout:g}s: master_link_status:{watch.shown}")
            return 1
        gevent.sleep(args.interval)


def run_sentinel(args, out=print):
    """``redis+sentinel://.../service``: every replica the sentinels list for the service,
    asked again each round (a failover changes them), until all their links are up."""
    from greenredis.cli.failures import Fatal, describe, transient
    from greenredis.cli.replica import check_replica_url
    from greenredis.client.sentinel import Sentinel
    from greenredis.errors import MasterNotFoundError

    parsed = check_replica_url(args.url)
    service = parsed.service
    sentinel = Sentinel(parsed.sentinels, **parsed.sentinel_options())
    say = _say(out)
    start = time.monotonic()
    watches = {}  # (host, port) -> (_Watch, Redis)
    replicas, told = [], None
    first = True
    try:
        while True:
            try:
                replicas = sentinel.discover_replicas(service)
                told = None
            except Exception as e:  # every sentinel down or refusing: say it once, keep the list
                if not transient(e) or isinstance(e, MasterNotFoundError):
                    raise Fatal(
                        f"the sentinels: {e}", "check the service name and sentinel_password"
                    ) from None
                if first:  # as probe() stops for one server: most likely a wrong address
                    raise Fatal(*describe(e, "the sentinels")) from None
                if str(e) != told:
                    say(f"cannot ask the sentinels: {e}")
                    told = str(e)
            if not replicas and told is None and "none" not in watches:
                say(f"no replica of {service!r} that the sentinels call healthy (yet)")
                watches["none"] = None
            statuses = []
            for host, port in replicas:
                entry = watches.get((host, port))
                if entry is None:
                    client = Redis(params=parsed.params.replace(host=host, port=port, timeout=5.0))
                    entry = watches[(host, port)] = (_Watch(say, f"{host}:{port} "), client)
                watch, client = entry
                try:
                    statuses.append(watch.step(parse_info(client.cmd(["INFO", "replication"]))))
                except Exception as e:
                    if not transient(e):
                        raise Fatal(*describe(e, f"replica {host}:{port}")) from None
                    statuses.append("unreachable")
                    if watch.shown != "unreachable":
                        say(f"{host}:{port} cannot read INFO replication: {describe(e, 'the replica')[0]}")
                        watch.shown = "unreachable"
            if statuses and all(status == "up" for status in statuses):
                say(f"every replica of {service!r} ({len(statuses)}) has master_link_status:up")
                return 0
            first = False
            if args.timeout is not None and time.monotonic() - start > args.timeout:
                up = sum(status == "up" for status in statuses)
                say(f"gave up after {args.timeout:g}s: {up} of {len(statuses)} replicas up")
                return 1
            gevent.sleep(args.interval)
    finally:
        for entry in watches.values():
            if entry is not None:
                entry[1].close()
        sentinel.close()
