"""Replicate a Redis master into this process and show the link, live.

Connects to URL as a replica (the master forks for a full sync, and lists this
process in INFO replication), shows a progress bar while the snapshot loads
(bytes, keys, rate, ETA: by bytes, or for a diskless master by the key counts the
snapshot announces),
then prints a status line whenever the state, link, replid or last error changes
(and every --every seconds if given). Ctrl-C stops.
"""

import logging
import sys
import time

import gevent

from greenredis.replication.replica import Replica


def add_arguments(parser):
    parser.add_argument("url", help="the master, e.g. redis://:password@127.0.0.1:6379")
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


def _stamp():
    return time.strftime("%H:%M:%S")


def run(args):
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S"
    )
    rep = Replica(args.url, listening_port=args.port)
    rep.start(block=False)
    tty = sys.stdout.isatty()
    last_key, last_print, in_bar = None, 0.0, False
    try:
        while True:
            st = rep.status()
            now = time.time()
            if st["state"] == "loading" and st.get("load_seconds") is not None:
                line = f"{_stamp()} {progress_line(st)}"
                if tty:
                    sys.stdout.write("\r" + line.ljust(100))
                    in_bar = True
                elif now - last_print >= max(args.interval, 1.0):
                    print(line)
                    last_print = now
                sys.stdout.flush()
            else:
                key = (
                    st["state"],
                    st["link"],
                    st["replid"],
                    st["last_error"],
                    st["full_syncs"],
                    st["partial_resyncs"],
                )
                if key != last_key or (args.every and now - last_print >= args.every):
                    if in_bar:
                        sys.stdout.write("\n")
                        in_bar = False
                    print(f"{_stamp()} {status_line(st)}", flush=True)
                    last_key, last_print = key, now
            gevent.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    finally:
        rep.stop()
    return 0
