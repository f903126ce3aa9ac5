"""Replicate a Redis master into this process and show the link, live.

Connects to URL as a replica (the master forks for a full sync, and lists this
process in INFO replication), shows a progress bar while the snapshot loads
(bytes, keys, rate, ETA: by bytes, or for a diskless master by the key counts the
snapshot announces),
then prints a status line whenever the state, link, replid or last error changes
(and every --every seconds if given). Ctrl-C stops.

Errors are said once per attempt, with what to fix where it needs a fix (a wrong or
missing password, a master that cannot sync) and when the next try is: tries back
off up to --max-backoff seconds. A bad URL stops at once.
"""

import logging
import sys
import time

import gevent

from greenredis.replication.replica import Replica


def add_arguments(parser):
    parser.add_argument(
        "url",
        help="the master, e.g. redis://:password@127.0.0.1:6379, or a Sentinel service to follow"
        " through failovers: redis+sentinel://:password@host:26379[,host:port...]/service",
    )
    parser.add_argument(
        "--interval", type=float, default=0.5, help="seconds between progress updates (default 0.5)"
    )
    parser.add_argument(
        "--every",
        type=float,
        default=0,
        help="also print a status line every N seconds (default: only on change)",
    )
    parser.add_argument(
        "--port", type=int, default=None, help="port to announce with REPLCONF listening-port"
    )
    parser.add_argument(
        "--max-backoff", type=float, default=30.0, help="longest wait between tries in seconds (default 30)"
    )


def _human(n, unit="B"):
    for prefix in ("", "k", "M", "G", "T"):
        if abs(n) < 1000 or prefix == "T":
            return f"{n:.0f} {prefix}{unit}" if prefix == "" else f"{n:.1f} {prefix}{unit}"
        n /= 1000.0


def progress_line(st, width=30):
    """One line for a load in progress: bar (when the size is known), bytes, keys, rates, ETA."""
    done, size = st.get("bytes_loaded") or 0, st.get("rdb_size")
    secs = max(st.get("load_seconds") or 0.0, 1e-6)
    rate = done / secs
    keys = st.get("keys_loaded") or 0
    expected = st.get("keys_expected")

    def bar(frac):
        fill = int(frac * width)
        return f"[{'#' * fill}{'.' * (width - fill)}] {frac * 100:5.1f}%"

    parts = []
    if size:
        parts.append(bar(min(done / size, 1.0)))
        parts.append(f"{_human(done)}/{_human(size)}")
        eta = (size - done) / rate if rate > 0 else float("inf")
        eta_text = f"ETA {eta:.0f}s" if eta != float("inf") else "ETA ?"
        parts.append(f"{keys:,} keys")
    elif expected:  # diskless: no byte size, but RESIZEDB said how many keys to expect
        parts.append(bar(min(keys / expected, 1.0)))
        parts.append(f"{keys:,}/{expected:,} keys (diskless) {_human(done)}")
        key_rate = keys / secs
        eta_text = f"ETA {(expected - keys) / key_rate:.0f}s" if key_rate > 0 and keys < expected else "ETA ?"
    else:
        parts.append(f"loading (diskless) {_human(done)}")
        eta_text = "ETA ? (size unknown)"
        parts.append(f"{keys:,} keys")
    parts.append(f"{_human(rate)}/s {_human(keys / secs, 'keys')}/s")
    parts.append(eta_text)
    return "  ".join(parts)


def status_line(st):
    stale = st.get("staleness")
    fields = [
        f"state={st['state']}",
        f"master={st['master']}",
        f"link={st['link']} ({st['link_seconds']:.0f}s)",
        f"replid={st['replid'] or '-'}",
        f"offset={st['offset']}",
        f"keys={st['keys']}",
        f"stale={stale:.1f}s" if stale is not None else "stale=-",
        f"full_syncs={st['full_syncs']}"
        + (f" (last {st['last_full_sync_seconds']:.1f}s)" if st.get("last_full_sync_seconds") else ""),
        f"partial={st['partial_resyncs']}",
        f"applied={st['commands_applied']}",
    ]
    if st.get("callbacks_dropped"):
        fields.append(f"dropped={st['callbacks_dropped']}")
    if st.get("last_error"):
        fields.append(f"error={st['last_error']!r}")
    return " ".join(fields)


WANTED = frozenset({"error", "link_up", "load_start", "load_done"})  # not one per key


def _stamp():
    return time.strftime("%H:%M:%S")


def explain(error):
    """(what happened, what to do) for a replication error text."""
    from greenredis.cli.failures import auth_problem

    if "no sentinel of" in error and "answered" in error:  # before AUTH: it is the sentinels'
        if auth_problem(error):
            return (
                "the sentinels refused their password (sentinel_password in the URL)",
                "put the sentinels' password in the URL: ?sentinel_password=PASSWORD",
            )
        return error, "are the sentinels running at the URL's addresses (and is sentinel_password right)?"
    auth = auth_problem(error)
    if auth == "wrongpass":
        return "the master refused the password (WRONGPASS)", "put the right password in the URL"
    if auth == "noauth":
        return (
            "the master needs a password (NOAUTH)",
            "put the password in the URL: redis://:PASSWORD@host:port",
        )
    if "NOMASTERLINK" in error or "MASTERDOWN" in error:
        return (
            "that server is a replica whose link to its own master is down (NOMASTERLINK)",
            "point at the master, or wait for its link",
        )
    if "no sentinel knows a master named" in error:
        return (
            error,
            "check the service name at the end of the URL (SENTINEL MASTERS on a sentinel lists them)",
        )
    if "NOPERM" in error:
        return "the user may not replicate (NOPERM)", "grant it +psync +sync +replconf +ping"
    if "SetupRefusedError" in error:  # SELECT 99 on a Redis of 16 dbs
        return f"the master refused the connection's setup: {error}", "check the db in the URL (/DB)"
    if "connection refused" in error.lower() or "ECONNREFUSED" in error:
        return "connection refused (is Redis running there?)", None
    if "not RESP" in error or "ProtocolError" in error:
        return f"not a Redis master: {error}", "is that the Redis port?"
    return error, None


def next_try(rep):
    """``; next try in 3.2s``: the replica's own (jittered) wait, or that it is trying now."""
    wait = rep.status().get("next_attempt_in")
    if wait is None:
        return "; trying again now"
    return f"; next try in {wait:.1f}s"


def diskless_delay(url):
    """The master's repl-diskless-sync-delay in seconds when it syncs diskless, 0 when it
    writes its snapshot to disk, None when it does not let us ask (CONFIG is denied)."""
    from greenredis.client.redis import Redis
    from greenredis.errors import RedisError

    r = Redis.from_url(url, timeout=2.0, connect_timeout=2.0)
    try:
        reply = r.cmd(["CONFIG", "GET", "repl-diskless-sync*"])
        conf = dict(zip(reply[::2], reply[1::2]))
        if conf.get(b"repl-diskless-sync") == b"yes":
            return int(conf.get(b"repl-diskless-sync-delay") or 0)
        return 0 if conf else None
    except (RedisError, TypeError, ValueError):
        return None
    finally:
        r.close()


def waiting_reason(wait):
    """Why the snapshot has not come yet, for ``diskless_delay``'s answer."""
    if wait is None:  # we may not know: say both, not a guess
        return "it is writing it to disk, or a diskless master waits out repl-diskless-sync-delay first"
    if wait:
        return f"a diskless master first waits out repl-diskless-sync-delay ({wait}s)"
    return "the master forks and writes it first"


def check_replica_url(url):
    """``check_url`` for redis://, rediss://, unix://; for redis+sentinel:// its own parser.
    A ``Fatal`` (exit 2) that never shows the password."""
    from greenredis.cli.failures import Fatal, check_url
    from greenredis.url import is_sentinel_url, parse_sentinel_url, redact_text, redact_url

    if not is_sentinel_url(url):
        return check_url(url)
    try:
        return parse_sentinel_url(url)
    except ValueError as e:
        message = redact_text(str(e).replace(repr(url), repr(redact_url(url))))
        raise Fatal(f"bad Redis URL: {message}", SENTINEL_URL_HINT, code=2) from None


SENTINEL_URL_HINT = "e.g. redis+sentinel://:PASSWORD@HOST:26379[,HOST:PORT...]/SERVICE"


def run(args):
    from greenredis.url import redact_url

    check_replica_url(args.url)
    if not getattr(args, "log_level_set", False):
        # this command says each error itself, with what to do
        logging.getLogger("greenredis.replica").setLevel(logging.CRITICAL)
    events = []
    first, most = 1.0, max(1.0, getattr(args, "max_backoff", 30.0))
    rep = Replica(
        args.url,
        callback=lambda event, info: event in WANTED and events.append((event, info)),
        listening_port=args.port,
        backoff=(first, most),
    )
    print(f"{_stamp()} replicating {redact_url(args.url)}", flush=True)
    rep.start(block=False)
    tty = sys.stdout.isatty()
    last_key, last_print, in_bar, bar_shown = None, 0.0, False, False
    delay_known, connecting_since = False, None

    def end_bar():
        nonlocal in_bar
        if in_bar:
            sys.stdout.write("\n")
            in_bar = False

    try:
        while True:
            for event, info in events[:]:
                events.remove((event, info))
                if event == "error":
                    what, fix = explain(str(info.get("error", "")))
                    end_bar()
                    print(f"{_stamp()} {what}" + (f": {fix}" if fix else "") + next_try(rep), flush=True)
                elif event == "load_start":
                    bar_shown = False
                elif event == "load_done" and not bar_shown:  # a load shorter than one update
                    st = rep.status()
                    done = {**st, "bytes_loaded": info.get("bytes", st.get("bytes_loaded"))}
                    if not done.get("rdb_size"):
                        done["rdb_size"] = done["bytes_loaded"] or None
                    done["keys_loaded"] = info.get("keys", done.get("keys_loaded"))
                    done["load_seconds"] = info.get("seconds", done.get("load_seconds"))
                    end_bar()
                    print(f"{_stamp()} {progress_line(done)}", flush=True)
                    bar_shown = True
            st = rep.status()
            now = time.time()
            if st["state"] != "connecting":
                connecting_since = None
            elif connecting_since is None:
                connecting_since = now
            waiting = st["state"] == "loading" and st.get("load_seconds") is None
            # the handshake is answered within a second; a master that keeps us longer is
            # preparing a snapshot (a diskless one waits out its delay first)
            waiting = waiting or (
                connecting_since is not None and now - connecting_since > 1.0 and st.get("last_heard")
            )
            if waiting:
                if not delay_known:  # FULLRESYNC said, no snapshot yet
                    delay_known = True
                    why = waiting_reason(diskless_delay(args.url))
                    print(f"{_stamp()} waiting for the master's snapshot ({why})", flush=True)
            elif st["state"] == "loading" and st.get("load_seconds") is not None:
                line = f"{_stamp()} {progress_line(st)}"
                bar_shown = True
                if tty:
                    sys.stdout.write("\r" + line.ljust(100))
                    in_bar = True
                elif now - last_print >= max(args.interval, 1.0):
                    print(line)
                    last_print = now
                sys.stdout.flush()
            else:
                if st["state"] not in ("loading", "connecting"):
                    delay_known = False
                key = (
                    st["state"],
                    st["master"],
                    st["link"],
                    st["replid"],
                    st["full_syncs"],
                    st["partial_resyncs"],
                )
                if key != last_key or (args.every and now - last_print >= args.every):
                    end_bar()
                    print(f"{_stamp()} {status_line(st)}", flush=True)
                    last_key, last_print = key, now
            gevent.sleep(args.interval)
    finally:
        rep.stop()
    return 0
