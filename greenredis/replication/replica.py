"""``Replica``: a local, always-readable copy of a Redis master, kept by replication.

    rep = greenredis.Replica("redis://:secret@10.0.0.5:6379")
    rep.start()                  # returns after the first full sync
    rep.get(b"route:api")        # a dict lookup: no network, even while the master is down

The replica connects like a Redis replica does (see ``greenredis.replication``), loads
the master's RDB snapshot into a fresh ``Keyspace`` while it streams in, then applies
the command stream. Reads are always served from the last *complete* dataset: a new
full sync loads beside it and replaces it in one step once its checksum is verified,
so readers never see an empty or half-loaded dataset. When the link drops, reads go
on from the local copy (``status()["staleness"]`` says for how long it has not heard
from the master) and it reconnects with backoff, asking for a partial resync
(``PSYNC <replid> <offset+1>``) so a short outage costs no reload.

Posing as a replica has side effects on the master, the same as adding a real one:

- every full sync makes the master fork and write an RDB snapshot (memory and latency
  on a big dataset); a corrupt snapshot or a command that cannot be applied here
  costs another one;
- its ``REPLCONF ACK``\\ s count toward ``WAIT`` and ``min-replicas-to-write``, so a
  master configured to need N replicas counts this one;
- it shows up in the master's ``INFO replication`` (``connected_slaves``, ``slaveN:``
  with the port it announces), in ``ROLE`` and in ``CLIENT LIST TYPE replica``, and the
  master keeps a replication buffer for it (``client-output-buffer-limit replica``);
- Sentinel discovers it from that INFO and finds nothing listening on the announced
  port, so it reports it as a replica that is down (and never promotes it).

Like a Redis replica, it never expires keys itself: logically expired keys read as
absent and only the master's DEL removes them. Before the first full sync completes
there is no dataset and reads find nothing (``start()`` blocks until there is one).
During a full resync the old and the new dataset are both in memory.
"""

import copy
import logging
import time
from collections import deque

import gevent
import gevent.event
import gevent.lock
import gevent.queue
import hiredis
from gevent import socket

from greenredis.backoff import delay as backoff_delay
from greenredis.client.sockets import connect
from greenredis.errors import ConnectionError, TimeoutError
from greenredis.replication.applier import Applier, ApplyError
from greenredis.replication.keymatch import match_keys
from greenredis.replication.keyspace import Keyspace, PackedHash, Set, Stream, ZSet, type_name
from greenredis.replication.protocol import (
    Commands,
    Continue,
    Error,
    FullResync,
    RdbData,
    RdbEnd,
    RdbStart,
    ReplicaProtocol,
    ReplicationError,
    encode_command,
)
from greenredis.replication.rdb.parser import CorruptValueError, RDBError, RDBParser
from greenredis.url import is_sentinel_url, parse_url

__all__ = ["Replica"]

log = logging.getLogger("greenredis.replica")

CONNECTING, LOADING, STREAMING, DOWN, STOPPED = ("connecting", "loading", "streaming", "down", "stopped")


def _key(key):
    return key.encode() if isinstance(key, str) else key


def _now_ms():
    return int(time.time() * 1000)


def _copy(value, field_exp=None, now=None):
    """A copy a caller may keep or change: the live objects change under replication."""
    t = type(value)
    if t is bytes:
        return value
    if t is deque:
        return list(value)
    if t is PackedHash:
        value, t = value.fields(), dict
    if t is dict:
        if field_exp:
            return {f: v for f, v in value.items() if (e := field_exp.get(f)) is None or e >= now}
        return dict(value)
    if t is Set:
        return set(value)
    if t is ZSet:
        return ZSet(value)
    if t is Stream:
        return value.copy()
    return copy.deepcopy(value)


class Replica:
    """A replica of the Redis master at ``url`` (``redis://``, ``rediss://``, ``unix://``;
    ``redis://user:password@host:port`` for an ACL user), or of the master of a Sentinel
    service (``redis+sentinel://[[user]:password@]host:port[,host:port...]/service``),
    followed through its failovers with a partial resync.

    callback(event, info): called from a greenlet of its own, behind a bounded queue
    (``queue_size``; when full, events are dropped and counted in ``status()`` rather
    than slowing replication down). A callback that raises is logged and ignored.
    Events and their ``info`` dicts:

    ``"load_start"``   replid, offset, size (RDB bytes; None for a diskless transfer)
    ``"load_done"``    replid, offset, keys, bytes, seconds
    ``"command"``      argv, offset, touched ([(db, key), ...]): each applied command
    ``"apply_error"``  argv, error: a command that could not be applied (full resync follows)
    ``"error"``        error: what ended a link or refused a snapshot
    ``"link_up"``      replid, offset, partial (True after +CONTINUE)
    ``"link_down"``    error

    on_key(db, key, value, expire_ms): called for each key of a full sync as it loads,
    inline on the replication greenlet (every key, none dropped; keep it fast: the load
    waits for it), before the snapshot's checksum is verified. The value is the live
    object: copy it to keep it. One that raises is logged once per load and counted in
    ``status()["on_key_errors"]``. Without it a load does no per-key work at all.

    listening_port: the port announced with ``REPLCONF listening-port`` (default: this
    connection's local port, so each replica is told apart in the master's INFO);
    repl_timeout: seconds without a byte from the master before the link counts as
    dead (the master pings every 10 s; default 60, Redis's ``repl-timeout``);
    backoff: (first, max) reconnect delays in seconds.

    hll_sparse_max_bytes: the master's ``hll-sparse-max-bytes`` (when an HLL turns dense,
    so its bytes). None: asked with ``CONFIG GET`` at each connect; if the master refuses,
    Redis's default 3000 is assumed (logged once). A later ``CONFIG SET`` on the master is
    not replicated: reconnect (``stop()``/``start()``) or pass the value.

    locator: where the master is now, for a master that can change (see ``follow()``): an
    object with ``master_address()`` -> ``(host, port)``, asked before each connection
    (so after a lost link too; raising ``ConnectionError`` counts as a failed try), and
    optionally ``watch(callback)``, which calls ``callback(host, port)`` when the master
    changes and returns a function that stops watching. ``url`` then gives only the
    credentials and TLS settings. A ``redis+sentinel://`` URL makes one
    (``greenredis.replication.sentinel_locator``): it follows the service's failovers.

    Loading a snapshot or applying a heavy stream, it gives the rest of the process
    (other greenlets, timers) a turn at least every ``TIME_SLICE`` seconds.
    """

    TIME_SLICE = 0.02  # seconds of loading/applying between turns for timers and greenlets

    def __init__(
        self,
        url=None,
        callback=None,
        *,
        on_key=None,
        listening_port=None,
        ip_address=None,
        queue_size=10000,
        ack_interval=1.0,
        repl_timeout=60.0,
        backoff=(0.1, 5.0),
        chunk_size=256 * 1024,
        hll_sparse_max_bytes=None,
        locator=None,
    ):
        if locator is None and is_sentinel_url(url):
            from greenredis.replication.sentinel_locator import SentinelLocator

            locator = SentinelLocator(url)
            self.params = locator.params
        else:
            self.params = parse_url(url)
        self.locator = locator
        self._located = locator is None  # params name the master (a locator has answered)
        self._unwatch = None
        self.callback = callback
        self.on_key = on_key
        self.listening_port = listening_port
        self.ip_address = ip_address
        self.ack_interval = ack_interval
        self.repl_timeout = repl_timeout
        self.backoff = backoff
        self.chunk_size = chunk_size
        self.hll_sparse_max_bytes = hll_sparse_max_bytes
        self._url = url
        self._hll_max = hll_sparse_max_bytes  # the value the appliers use
        self._hll_warned = False
        self._ks = None  # the complete dataset readers see
        self._applier = None
        self._replid = None  # of the dataset in _ks
        self._offset = -1
        # just after the last data-changing command, and the db selected there: where a
        # new master (a promoted replica) is asked to continue from (see protocol.py)
        self._data_offset = -1
        self._data_db = 0
        self._streamed_from = None  # the address of the last session that streamed
        self._session_address = None
        self._switching = False  # follow() ended the session: reconnect at once
        self._wake = gevent.event.Event()  # cuts a backoff wait short
        self._force_full = False
        self._proto = None
        self._sock = None
        self._send_lock = gevent.lock.Semaphore()
        self._loaded = gevent.event.Event()
        self._stopping = gevent.event.Event()
        self._greenlets = []
        self._queue = gevent.queue.Queue(queue_size) if callback else None
        self._stopped = False
        self._state = STOPPED
        self._link_up = False
        self._link_since = time.time()
        self._last_heard = None
        self._load = None  # the FullSync in progress
        self._apply_errors = {}  # command name -> full resyncs it forced
        self._streamed = False  # this session reached streaming (resets backoff)
        self._next_attempt_at = None  # monotonic time of the next try while backing off
        self._stats = {
            "bytes_loaded": 0,
            "keys_loaded": 0,
            "rdb_size": None,
            "last_full_sync": None,
            "last_full_sync_seconds": None,
            "full_syncs": 0,
            "last_partial_resync": None,
            "partial_resyncs": 0,
            "last_error": None,
            "last_error_time": None,
            "commands_applied": 0,
            "callbacks_dropped": 0,
            "on_key_errors": 0,
            "connects": 0,
        }

    @property
    def master(self):
        """The address of the master it follows now (before a locator's first answer, what
        the locator is)."""
        if not self._located:
            return getattr(self.locator, "name", None) or repr(self.locator)
        p = self.params
        return p.unix_socket_path or f"{p.host}:{p.port}"

    def follow(self, host: str, port: int) -> None:
        """Replicate from the master at ``host:port`` from now on, as after a failover; the
        URL's credentials and TLS settings stay. The link to the old master is closed at
        once and the new one asked to continue where the data left off (``PSYNC <replid>
        <offset>``): a promoted replica that was in sync answers ``+CONTINUE``. Reads go on
        from the local copy meanwhile. Callable from any greenlet, callbacks included."""
        host, port = _address(host, port)
        params = self.params.replace(host=host, port=port, unix_socket_path=None)
        if params == self.params:
            return
        old, self.params, self._located = self.master, params, True
        log.info("replica of %s: following %s from now on", old, self.master)
        self._switching = True
        self._wake.set()
        sock = self._sock
        if sock is not None:
            try:  # wakes the session's recv (close() from another greenlet would not)
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, block=True, timeout=60):
        """Connect and replicate in the background. With ``block``, return once the first
        full sync is loaded, or raise ``greenredis.TimeoutError`` after ``timeout``
        seconds (the replica keeps trying; ``stop()`` it to give up)."""
        if not self._greenlets:
            self._stopped = False
            self._stopping.clear()
            self._state = CONNECTING
            watch = getattr(self.locator, "watch", None)
            if watch is not None and self._unwatch is None:
                self._unwatch = watch(self.follow)
            self._greenlets.append(gevent.spawn(self._run))
            if self._queue is not None:
                self._greenlets.append(gevent.spawn(self._callback_worker))
        if block:
            gevent.wait([self._loaded, self._stopping], timeout=timeout, count=1)
            if self._stopped and not self._loaded.is_set():
                raise ConnectionError(f"replica of {self.master} stopped before its first full sync")
            if not self._loaded.is_set():
                raise TimeoutError(
                    f"no full sync from {self.master} within {timeout}s"
                    f" (last error: {self._stats['last_error'] or 'none'})"
                )
        return self

    def wait_loaded(self, timeout=None):
        """Wait for a first complete dataset; True once there is one."""
        return self._loaded.wait(timeout)

    def stop(self):
        """Close the link and stop replicating; the local copy stays readable.
        Callable from a callback too."""
        self._stopped = True
        self._stopping.set()
        greenlets, self._greenlets = self._greenlets, []
        me = gevent.getcurrent()  # a callback calling stop() runs in the callback worker
        gevent.killall([g for g in greenlets if g is not me])
        unwatch, self._unwatch = self._unwatch, None
        if unwatch is not None:
            unwatch()
        self._close_socket()
        if self._link_up:
            self._set_link(False, "stopped")
        self._state = STOPPED

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- reads: no network, from the last complete dataset -------------------------------

    def _lookup(self, key, db):
        ks = self._ks
        if ks is None:
            return None, None, None
        d = ks.dbs.get(db)
        if d is None:
            return None, None, None
        key = _key(key)
        value = d.data.get(key)
        if value is None:
            return None, None, None
        exp = d.expires.get(key)
        now = _now_ms()
        if exp is not None and exp < now:
            return None, None, None
        return value, exp, d

    def get(self, key, db=0):
        """The key's value as a Python object (a copy), or None when absent or expired:
        bytes | list | set | dict | ZSet | Stream. A hash loaded packed and corrupt inside
        raises ``CorruptValueError`` (an ``RDBError``) naming the key and db."""
        value, _, d = self._lookup(key, db)
        if value is None:
            return None
        try:
            fe = d.field_expires.get(_key(key)) if d.field_expires else None
            if fe:
                out = _copy(value, fe, _now_ms())
                return out or None
            return _copy(value)
        except CorruptValueError as e:  # a packed hash corrupt inside, at its first read
            k = _key(key)
            raise CorruptValueError(f"{e} (key {k[:64]!r}, db {db})", k, db) from None

    def exists(self, key, db=0):
        return self._lookup(key, db)[0] is not None

    def type(self, key, db=0):
        """Redis's TYPE: "string", "list", "set", "hash", "zset", "stream" or "none"."""
        return type_name(self._lookup(key, db)[0])

    def pttl(self, key, db=0):
        """Milliseconds to live: -1 without expiry, -2 when there is no such key."""
        value, exp, _ = self._lookup(key, db)
        if value is None:
            return -2
        if exp is None:
            return -1
        return max(exp - _now_ms(), 0)

    def ttl(self, key, db=0):
        """Seconds to live, rounded as Redis's TTL does: -1 no expiry, -2 no key."""
        ms = self.pttl(key, db)
        return ms if ms < 0 else (ms + 500) // 1000

    def keys(self, pattern="*", db=0):
        """Keys matching a Redis glob pattern, leaving out logically expired ones."""
        ks = self._ks
        d = ks.dbs.get(db) if ks is not None else None
        if d is None:
            return []
        pattern = _key(pattern)
        now = _now_ms()
        expires = d.expires
        keys = match_keys(pattern, d.data)
        if expires:
            keys = [k for k in keys if (e := expires.get(k)) is None or e >= now]
        return keys

    def dbsize(self, db=0):
        """Keys in ``db``, like Redis's DBSIZE (logically expired ones included)."""
        ks = self._ks
        d = ks.dbs.get(db) if ks is not None else None
        return len(d.data) if d is not None else 0

    @property
    def keyspace(self):
        """The live dataset (read-only by convention), or None before the first load."""
        return self._ks

    @property
    def loaded(self):
        return self._loaded.is_set()

    def status(self):
        """Where replication stands, as a dict:

        ``state`` connecting | loading | streaming | down | stopped; ``link`` "up" /
        "down", ``link_since`` (unix time) and ``link_seconds``; ``master``; ``replid``
        and ``offset`` of the dataset being served; ``data_offset``, the offset after its
        last data-changing command (where another master is asked to continue from);
        ``keys`` in it; ``loaded`` (a first dataset exists); ``staleness``: seconds since the
        master was last heard from
        (None before that; it pings every 10 s while idle); ``last_heard``;
        ``bytes_loaded``, ``keys_loaded``, ``keys_expected`` (the dbs' RESIZEDB hints seen so
        far, or None), ``rdb_size`` (None when diskless) and
        ``load_seconds`` of the load in progress, else of the last one;
        ``last_full_sync`` (unix time), ``last_full_sync_seconds``, ``full_syncs``;
        ``last_partial_resync``, ``partial_resyncs``; ``last_error`` and
        ``last_error_time``; ``commands_applied``; ``apply_errors``: {command name: full
        resyncs it forced} (each name is logged the first time only); ``callbacks_dropped``;
        ``on_key_errors``; ``connects``; ``next_attempt_in``: seconds until the next try
        while backing off after a failure (the jittered delay really slept), else None.
        """
        now = time.time()
        load = self._load
        st = dict(self._stats)
        st.update(
            {
                "state": self._state,
                "master": self.master,
                "link": "up" if self._link_up else "down",
                "link_since": self._link_since,
                "link_seconds": now - self._link_since,
                "replid": self._replid,
                "offset": self._offset,
                "data_offset": self._data_offset,
                "keys": self._ks.key_count() if self._ks is not None else 0,
                "loaded": self._loaded.is_set(),
                "staleness": None if self._last_heard is None else now - self._last_heard,
                "last_heard": self._last_heard,
                "apply_errors": dict(self._apply_errors),
                "next_attempt_in": (
                    None
                    if self._next_attempt_at is None
                    else max(0.0, self._next_attempt_at - time.monotonic())
                ),
            }
        )
        if load is not None:
            st.update(load.progress(now))
        return st

    # -- the link --------------------------------------------------------------------------

    def _emit(self, event, info):
        q = self._queue
        if q is None:
            return
        try:
            q.put_nowait((event, info))
        except gevent.queue.Full:
            self._stats["callbacks_dropped"] += 1

    def _callback_worker(self):
        q = self._queue
        while not self._stopped:
            event, info = q.get()
            try:
                self.callback(event, info)
            except Exception:
                log.exception("replica callback failed on %s event; ignored", event)

    def _set_link(self, up, error=None, partial=False):
        self._link_up = up
        self._link_since = time.time()
        if up:
            self._emit("link_up", {"replid": self._replid, "offset": self._offset, "partial": partial})
        else:
            self._emit("link_down", {"error": error})

    def _error(self, message, level=logging.WARNING):
        self._stats["last_error"] = message
        self._stats["last_error_time"] = time.time()
        log.log(level, "replica of %s: %s", self.master, message)
        self._emit("error", {"error": message})

    def _run(self):
        failures = 0
        while not self._stopped:
            self._streamed = False
            try:
                self._session()
            except gevent.GreenletExit:
                raise
            except Exception as e:
                if self._switching:  # follow() cut it: not an error
                    log.debug("replica: session ended for a switch of master (%s)", _describe(e))
                else:
                    level = logging.ERROR if _is_data_error(e) else logging.WARNING
                    if getattr(e, "quiet", False):
                        level = logging.DEBUG  # a command that keeps failing: logged the first time
                    self._error(_describe(e), level)
            finally:
                self._close_socket()
                self._load = None
                if self._link_up:
                    why = f"switching to {self.master}" if self._switching else self._stats["last_error"]
                    self._set_link(False, why)
            if self._stopped:
                break
            self._state = DOWN
            if self._switching:
                failures = 0
                continue
            # A session that ended in a command we cannot apply is no success: each retry is
            # a full sync (a fork on the master), so back off, up to a minute.
            failures = 0 if self._streamed and not self._force_full else failures + 1
            first, most = self.backoff
            if self._force_full:
                most = max(most, 60.0)
            wait = backoff_delay(max(failures, 1), first, most)
            self._next_attempt_at = time.monotonic() + wait
            try:
                self._wake.wait(wait)  # follow() cuts it short
            finally:
                self._next_attempt_at = None

    def _connect(self):
        # The client's socket opener: TCP/unix/TLS (verified by default), keepalive, and
        # every failure a ConnectionError. A socket of its own, not the pipelined
        # connection: after PSYNC the master sends an RDB that is not RESP.
        sock = connect(self.params)
        sock.settimeout(self.repl_timeout)
        return sock

    def _close_socket(self):
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _send(self, data):
        if data and self._sock is not None:
            with self._send_lock:
                self._sock.sendall(data)

    def _ack_now(self, proto):
        if proto is self._proto and proto.streaming:
            try:
                self._send(proto.ack())
            except OSError:
                pass  # the session's own reads will notice

    def _acker(self, proto):
        while True:
            gevent.sleep(self.ack_interval)
            self._ack_now(proto)

    def _session(self):
        self._state = CONNECTING
        self._switching = False
        self._wake.clear()
        if self.locator is not None:
            host, port = _address(*self.locator.master_address())
            # a follow() while we asked knows better than the answer
            if not self._switching and (
                not self._located or (host, port) != (self.params.host, self.params.port)
            ):
                if self._located:
                    log.info("replica of %s: the master is at %s:%s now", self.master, host, port)
                self.params = self.params.replace(host=host, port=port, unix_socket_path=None)
                self._located = True
            self._switching = False  # a follow() while we asked: that is where we go now
        p = self.params
        self._session_address = p.address
        self._sock = sock = self._connect()
        self._stats["connects"] += 1
        if self.params is not p:  # follow() while connecting
            return
        if self.hll_sparse_max_bytes is None:
            self._hll_max = self._ask_hll_sparse_max_bytes(sock)
        port = self.listening_port
        if port is None:
            port = sock.getsockname()[1] if not self.params.unix_socket_path else 0
        full = self._force_full or self._replid is None
        if self._streamed_from in (None, p.address) and self._applier is not None:
            # the same master again: it has every byte we have (its backlog may not reach
            # back to the data offset after a long quiet spell of PINGs and hellos)
            offset, db = self._offset, self._applier.db
        else:  # another master: it may hold our history only up to our last data
            offset, db = self._data_offset, self._data_db
        proto = self._proto = ReplicaProtocol(
            password=p.password,
            username=p.username,
            listening_port=port,
            ip_address=self.ip_address,
            replid=None if full else self._replid,
            offset=-1 if full else offset,
            db=db,
        )
        self._send(proto.data_to_send())
        acker = gevent.spawn(self._acker, proto)
        try:
            self._receive(sock, proto)
        finally:
            acker.kill(block=False)

    def _receive(self, sock, proto):
        recv = sock.recv
        on_event = _ON_EVENT
        slice_started = time.perf_counter()
        while True:
            # big reads for a snapshot; smaller ones while streaming, so that readers
            # get a turn at least every few milliseconds under a heavy write load
            data = recv(65536 if proto.streaming else self.chunk_size)
            if not data:
                raise ConnectionResetError("the master closed the connection")
            self._last_heard = time.time()
            for event in proto.receive_data(data):
                on_event[type(event)](self, event, proto)
            if proto.streaming:  # every event of the chunk is handled: PINGs count too
                self._advance(proto.offset)
                self._data_offset, self._data_db = proto.data_offset, proto.data_db
            out = proto.data_to_send()
            if out:
                self._send(out)
            # While the socket has data, recv() never waits and sleep(0) runs only greenlets
            # already ready, not the loop's timers: so every time slice, a real wait.
            now = time.perf_counter()
            if now - slice_started >= self.TIME_SLICE:
                gevent.sleep(_TIMER_TURN)
                slice_started = time.perf_counter()
            else:
                gevent.sleep(0)

    def _advance(self, offset, replid=None):
        """The one writer of the replication position of the dataset being served."""
        self._offset = offset
        if replid is not None:
            self._replid = replid

    def _on_full_resync(self, event, proto):
        self._state = LOADING

    def _on_continue(self, event, proto):
        # the same dataset goes on; a fresh applier drops any MULTI left half-read
        self._advance(event.offset, event.replid)
        self._data_offset, self._data_db = proto.data_offset, proto.data_db
        self._applier = self._new_applier(self._ks)
        self._applier.select(proto.db)  # the master's stream relies on the last SELECT
        self._stats["last_partial_resync"] = time.time()
        self._stats["partial_resyncs"] += 1
        self._went_live("partial")

    def _on_error(self, event, proto):
        raise event.error

    def _went_live(self, how):
        self._state = STREAMING
        self._streamed = True
        self._streamed_from = self._session_address
        self._force_full = False
        log.info("replica of %s: streaming at offset %s (%s)", self.master, self._offset, how)
        self._set_link(True, partial=how == "partial")

    def _ask_hll_sparse_max_bytes(self, sock):
        """The master's ``hll-sparse-max-bytes`` asked on the replication connection before
        the handshake, or None (Redis's default) if it will not say."""
        p = self.params
        auth = []
        if p.password is not None:
            auth = [("AUTH", p.username, p.password) if p.username else ("AUTH", p.password)]
        try:
            sock.sendall(
                b"".join(encode_command(*c) for c in [*auth, ("CONFIG", "GET", "hll-sparse-max-bytes")])
            )
            reader = hiredis.Reader()
            replies = []
            while len(replies) <= len(auth):
                data = sock.recv(65536)
                if not data:
                    raise ConnectionResetError("the master closed the connection")
                reader.feed(data)
                while (reply := reader.gets()) is not False:
                    replies.append(reply)
            reply = replies[-1]
            if isinstance(reply, Exception):
                raise reply
            return int(reply[1])
        except (OSError, gevent.Timeout):
            raise
        except Exception as e:  # ACL, a renamed CONFIG, an old server: fall back
            if not self._hll_warned:
                self._hll_warned = True
                log.warning(
                    "replica of %s: cannot read the master's hll-sparse-max-bytes (%s); assuming"
                    " 3000: pass Replica(hll_sparse_max_bytes=...) if it is configured otherwise",
                    self.master,
                    _describe(e),
                )
            return None

    def _new_applier(self, ks):
        return Applier(ks, hll_sparse_max_bytes=self._hll_max)

    def _on_rdb_start(self, event, proto):
        self._load = FullSync(
            event.size,
            on_key=self._on_key if self.on_key is not None else None,
            on_module=self._on_module,
        )
        self._stats["rdb_size"] = event.size
        self._emit("load_start", {"replid": proto.replid, "offset": proto.offset, "size": event.size})
        log.info(
            "replica of %s: full sync, loading %s",
            self.master,
            f"{event.size} bytes" if event.size is not None else "a diskless snapshot",
        )

    def _on_key(self, db, key, value, expire_ms):
        try:
            self.on_key(db, key, value, expire_ms)
        except Exception:
            load = self._load
            if load is not None and not load.on_key_failed:
                load.on_key_failed = True
                log.exception(
                    "replica of %s: on_key failed on key %r; ignored (further failures of this"
                    " load are counted in status()['on_key_errors'])",
                    self.master,
                    key[:64],
                )
            self._stats["on_key_errors"] += 1
        if self._stopped:
            # stop() from on_key runs on this greenlet, which it cannot kill: end the load here
            # (the old dataset stays) instead of finishing it on a closed socket.
            raise gevent.GreenletExit

    def _on_module(self, db, key, module_name):
        log.warning(
            "replica of %s: skipped a value of module %s (key %r, db %s)", self.master, module_name, key, db
        )

    def _on_rdb_data(self, event, proto):
        self._load.feed(event.data)

    def _on_rdb_end(self, event, proto):
        load = self._load
        ks, seconds = load.finish()  # raises unless complete and its CRC checked
        # the one-step swap: readers go from the old complete dataset to the new one
        self._ks = ks
        self._applier = self._new_applier(ks)
        release_freed_memory()  # the old copy was freed just now: hand its pages back
        self._advance(proto.offset, proto.replid)
        self._data_offset, self._data_db = proto.offset, 0
        self._load = None
        st = self._stats
        st.update(
            bytes_loaded=load.bytes,
            keys_loaded=load.keys_loaded,
            last_full_sync=time.time(),
            last_full_sync_seconds=seconds,
        )
        st["full_syncs"] += 1
        log.info(
            "replica of %s: loaded %d keys (%d bytes) in %.2fs",
            self.master,
            load.keys_loaded,
            load.bytes,
            seconds,
        )
        self._emit(
            "load_done",
            {
                "replid": self._replid,
                "offset": self._offset,
                "keys": ks.key_count(),
                "bytes": load.bytes,
                "seconds": seconds,
            },
        )
        self._loaded.set()
        self._went_live("full")
        # A master starts the stream after a diskless sync on the first ACK it gets once
        # it has reaped its RDB child; the one sent at the end of the payload can come
        # too early, and the next regular one is a second away.
        for delay in (0.1, 0.3):
            gevent.spawn_later(delay, self._ack_now, proto)

    def _apply_failed(self, argv, e):
        """The error ending a session on a command we cannot apply. Only the first failure
        of each command name is logged; the others are counted in ``apply_errors``."""
        name = _command_name(argv)
        seen = self._apply_errors.get(name, 0)
        self._apply_errors[name] = seen + 1
        if not seen and not isinstance(e, ApplyError):
            log.error("replica of %s: applying %s failed", self.master, _show(argv), exc_info=e)
        self._emit("apply_error", {"argv": argv, "error": str(e)})
        self._force_full = True
        quiet = "" if not seen else f" (failure {seen + 1} of {name})"
        return (_RepeatedDataError if seen else _DataError)(
            f"cannot apply {_show(argv)}: {e}; the local copy may have diverged, so a full resync"
            f" follows{quiet}"
        )

    def _on_commands(self, event, proto):
        applier = self._applier
        argvs = event.argvs
        done = 0
        try:
            if self._queue is None:
                done = applier.apply_all(argvs)
            else:
                apply, emit, offsets = applier.apply, self._emit, event.offsets
                for argv in argvs:
                    touched = apply(argv)
                    emit("command", {"argv": argv, "offset": offsets[done], "touched": touched})
                    done += 1
        except BaseException as e:
            done = getattr(e, "index", done)
            if isinstance(e, Exception):
                raise self._apply_failed(argvs[done], e) from e
            raise
        finally:
            self._stats["commands_applied"] += done
            if done:  # the offset follows what is applied, so a PSYNC never replays a command
                self._advance(event.offsets[done - 1])

    def pfcount(self, key, *keys, db=0):
        """PFCOUNT on the copy: the key's cardinality estimate (its cached one when valid),
        or that of the union of several keys; 0 for missing keys. A key that is not an HLL
        raises ``ReplyError`` with Redis's WRONGTYPE message. The copy is not written."""
        from greenredis.errors import ReplyError
        from greenredis.replication import hyperloglog

        values = []
        for k in (key, *keys):
            value = self._lookup(k, db)[0]
            if value is not None and type(value) is not bytes:
                raise ReplyError("WRONGTYPE Operation against a key holding the wrong kind of value")
            values.append(value)
        try:
            return hyperloglog.pfcount(*values)
        except hyperloglog.HLLError as e:
            raise ReplyError(str(e)) from None


class _DataError(Exception):
    """Data we refuse (a bad snapshot, a command we cannot apply)."""

    quiet = False  # True: a repeat of one already logged


class _RepeatedDataError(_DataError):
    quiet = True


def _address(host, port):
    """``(host, port)`` checked: str host (bytes from a Sentinel reply are decoded), int port."""
    if isinstance(host, bytes):
        host = host.decode("utf-8", "replace")
    if not isinstance(host, str) or not host:
        raise ValueError(f"a master's host must be a non-empty str, not {host!r}")
    try:
        number = int(port)
    except (TypeError, ValueError):
        raise ValueError(f"a master's port must be a number, not {port!r}") from None
    if not 0 < number < 65536:
        raise ValueError(f"a master's port must be 1-65535, not {number}")
    return host, number


_libc = None


def release_freed_memory():
    """Ask glibc's malloc to give freed pages back to the OS (``malloc_trim(0)``); False
    where there is no glibc. A few ms on a heap of hundreds of MB.

    Reference counting frees the old dataset at a swap, but the allocator keeps the pages:
    RSS after 5 full resyncs of 1M keys was 1.1-1.4x one copy (varying with how the
    allocations interleave), 1.08x with a trim after each swap."""
    global _libc
    if _libc is None:
        import ctypes

        # dlopen(NULL): the process's own symbols, libc's among them. Not
        # ctypes.util.find_library, which runs ldconfig or gcc in a subprocess (and under
        # monkey patching lets other greenlets run in the middle of the swap).
        try:
            lib = ctypes.CDLL(None)
            _libc = lib if hasattr(lib, "malloc_trim") else False
        except (OSError, TypeError):
            _libc = False
    if not _libc:
        return False
    _libc.malloc_trim(0)
    return True


def _command_name(argv):
    try:
        return bytes(argv[0]).upper().decode("utf-8", "replace")[:40]
    except (IndexError, TypeError):
        return "?"


def _is_data_error(e):
    """Bad input (logged as an error) rather than a broken or refused connection."""
    return isinstance(e, (_DataError, RDBError, ApplyError)) or (
        isinstance(e, ReplicationError) and not e.retry_later
    )


def _describe(e):
    if isinstance(e, socket.timeout):
        return "no data from the master within repl_timeout"
    if isinstance(e, RDBError):
        return f"refused the snapshot: {e}"
    if isinstance(e, (ReplicationError, _DataError)):
        return str(e)
    return f"{type(e).__name__}: {e}"


def _show(argv, limit=6):
    """The start of a command for a log line or an error, its control characters escaped."""
    parts = [a[:40].decode("utf-8", "replace").translate(_ESCAPES) for a in argv[:limit]]
    return " ".join(parts) + (" ..." if len(argv) > limit else "")


_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(32), 127)}


# The wait that lets the loop run its timers and I/O during a load: a timer expired by the
# time the loop polls, so it polls without blocking. (libev blocks at least 1 ms for a
# timer not yet due: 0.001 cost 1.1-1.9 ms a turn, 5-10 % of a load's time.)
_TIMER_TURN = 1e-6

# One dispatch on the type of a protocol event.
_ON_EVENT = {
    Commands: Replica._on_commands,
    RdbData: Replica._on_rdb_data,
    FullResync: Replica._on_full_resync,
    RdbStart: Replica._on_rdb_start,
    RdbEnd: Replica._on_rdb_end,
    Continue: Replica._on_continue,
    Error: Replica._on_error,
}


class FullSync:
    """A full sync in progress: the snapshot's parser into a fresh Keyspace, and its
    counters. ``finish()`` returns the verified Keyspace and the seconds it took."""

    __slots__ = ("parser", "bytes", "size", "started", "on_key_failed")

    def __init__(self, size, on_key=None, on_module=None):
        self.parser = RDBParser(keyspace=Keyspace(), on_key=on_key, on_module=on_module)
        self.bytes = 0
        self.size = size  # None for a diskless transfer
        self.started = time.time()
        self.on_key_failed = False

    def feed(self, data):
        self.parser.feed(data)
        self.bytes += len(data)

    @property
    def keys_loaded(self):
        return self.parser.keys_loaded

    def progress(self, now):
        """What ``Replica.status()`` shows of it."""
        return {
            "bytes_loaded": self.bytes,
            "keys_loaded": self.parser.keys_loaded,
            # RESIZEDB's size hints: what a diskless load (no byte size) can show progress by
            "keys_expected": sum(k for k, _ in self.parser.resize_hints.values()) or None,
            "rdb_size": self.size,
            "load_seconds": now - self.started,
        }

    def finish(self):
        parser = self.parser
        ks = parser.finish()  # raises unless complete and its CRC checked
        if parser.trailing:
            raise _DataError(f"{len(parser.trailing)} bytes after the end of the RDB payload")
        return ks, time.time() - self.started
