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
    parser.add_argument("url", help="the replica to watch, e.g. redis://127.0.0.1:6380")
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


def run(args, out=print):
    from greenredis.cli.failures import Fatal, describe, probe, transient

    probe(args.url, 5.0)
    info_of = _client(args.url)
    start = time.monotonic()
    shown = None
    last_wait, last_wait_at = None, 0.0

    def say(text):
        out(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}", flush=True)

    while True:
        try:
            info = parse_info(info_of())
        except Exception as e:
            if not transient(e):  # a wrong password, or not Redis: no use waiting
                raise Fatal(*describe(e, "the replica")) from None
            say(f"cannot read INFO replication: {describe(e, 'the replica')[0]}")
            info = None
        if info is not None:
            if info.get("role") != "slave":
                say(f"STATUS: role:{info.get('role')} (not a replica)")
                return 2
            status = info.get("master_link_status", "?")
            if status != shown:
                say(
                    f"STATUS: master_link_status:{status} "
                    f"(master {info.get('master_host')}:{info.get('master_port')})"
                )
                shown = status
            if status == "up":
                return 0
            line = f"waiting for master_link_status:up ({progress(info)})"
            # every change of the sync's state, else a reminder every 5 s
            if line != last_wait or time.monotonic() - last_wait_at >= 5:
                say(line)
                last_wait, last_wait_at = line, time.monotonic()
        if args.timeout is not None and time.monotonic() - start > args.timeout:
            say(f"gave up after {args.timeout:g}s: master_link_status:{shown}")
            return 1
        gevent.sleep(args.interval)
