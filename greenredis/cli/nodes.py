"""Show the nodes of a grid (greenredis.Grid / redgrid) as a table.

Watches without joining: reads the grid's index and keys, and with ``--watch``
prints joins, leaves and updates as they happen (Ctrl-C to stop). The grid is
``redgrid:<domain>:<version>``; domain and version default to ``$DOMAIN`` and
``$VERSION``, the server to ``$REDIS_URL``.
"""

import os
import sys
import time

import gevent

from greenredis.grid.node import Grid


def add_arguments(parser):
    parser.add_argument(
        "--url",
        default=os.environ.get("REDIS_URL"),
        help="Redis URL (default: $REDIS_URL, else redis://127.0.0.1:6379)",
    )
    parser.add_argument("--domain", default=None, help="grid domain (default: $DOMAIN or empty)")
    parser.add_argument(
        "--version", dest="grid_version", default=None, help="grid version (default: $VERSION or empty)"
    )
    parser.add_argument(
        "--watch", action="store_true", help="keep running and print joins, leaves and updates"
    )
    parser.add_argument(
        "--interval", type=float, default=10.0, help="reconcile period in seconds while watching (default 10)"
    )
    parser.add_argument(
        "--ttl",
        type=float,
        default=60.0,
        help="forget nodes not heard of for this long (default 60, as the nodes')",
    )
    parser.add_argument(
        "--timeout", type=float, default=5.0, help="give up if Redis does not answer within this many seconds"
    )


def _safe(text):
    """Names and meta come from anyone who can write to Redis: no control characters
    (terminal escape sequences) reach the terminal, they are shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _meta_text(meta):
    return " ".join(f"{_safe(k)}={_safe(v)}" for k, v in sorted(meta.items()) if k != "ip")


def format_table(health, now):
    """Rows NAME IP STATE SEEN META for ``Grid.health()``, sorted by name."""
    rows = [("NAME", "IP", "STATE", "SEEN", "META")]
    for name in sorted(health):
        h = health[name]
        age = max(0.0, now - h["last_seen"])
        rows.append(
            (
                _safe(name),
                _safe(h["meta"].get("ip", "?")),
                h["state"],
                f"{age:.1f}s ago",
                _meta_text(h["meta"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "".join(
        ("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[4]).rstrip() + "\n" for r in rows
    )


def _print_event(event, out):
    parts = [
        time.strftime("%H:%M:%S"),
        f"{event.kind:<6}",
        _safe(event.name),
        f"ip={_safe(event.meta.get('ip', '?'))}",
        _meta_text(event.meta),
        f"({event.reason})",
    ]
    out.write(" ".join(p for p in parts if p) + "\n")
    out.flush()


def run(args, out=None):
    from greenredis.cli.failures import Fatal, check_url, probe, where
    from greenredis.url import DEFAULT_URL

    out = out or sys.stdout
    url = args.url or DEFAULT_URL
    check_url(url)
    try:
        grid = Grid(
            url,
            observe=True,
            ttl=args.ttl,
            interval=args.interval,
            domain=args.domain,
            version=args.grid_version,
            timeout=min(args.timeout, args.interval),
        )
    except ValueError as e:  # a bad domain/version or timing: say so, as argparse would
        sys.stderr.write(f"greenredis nodes: {e}\n")
        return 2
    probe(url, args.timeout)
    grid.start()
    try:
        if not grid.wait(args.timeout):
            raise Fatal(f"no answer from {where(grid.redis)} within {args.timeout:g} s")
        gevent.sleep(0)  # let fetches already under way land
        health = {n: h for n, h in grid.health().items() if h["state"] != "gone"}
        domain, version = grid.layout.domain, grid.layout.version
        if not health:
            out.write(
                f"grid {grid.layout.channel}: no nodes (domain {domain!r}, version {version!r}; "
                "set --domain/--version or $DOMAIN/$VERSION to look at another grid)\n"
            )
        else:
            out.write(f"grid {grid.layout.channel}: {len(health)} node(s)\n")
            out.write(format_table(health, time.time()))
        out.flush()
        if args.watch:
            for event in grid.events():
                _print_event(event, out)
        return 0
    finally:
        grid.stop()
