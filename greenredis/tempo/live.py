"""The gevent shell around ``Hub``: one Redis subscription per channel per process,
one reader and one writer greenlet per websocket.

The reader (the request's own greenlet) feeds requests to the hub and carries out
the effects; the writer is the only greenlet that ever writes the socket (data,
pongs, the close frame). A pump greenlet reads the process's single
``Subscription`` and hands each message to ``Hub.publish``.
"""

import json
import logging
import math
import socket

import gevent
import gevent.event
import gevent.lock
from geventwebsocket.exceptions import WebSocketError

from greenredis.backoff import Backoff
from greenredis.client.cluster_pubsub import MESSAGE_KINDS, publish_verb, subscribe_channels
from greenredis.errors import RedisError, ReplyError
from greenredis.telemetry import names
from greenredis.telemetry.loglines import MAX_LINE
from greenredis.tempo.hub import (
    ERRORS,
    CloseCode,
    Hub,
    ReadBacklog,
    ReadHistory,
    SendGrid,
    Subscribe,
    Unsubscribe,
    dumps,
)
from greenredis.tempo.websocket import CappedWebSocket, MessageTooLarge

__all__ = ["Live"]


def _number(v):
    return v.__class__ in (int, float) and math.isfinite(v)


log = logging.getLogger("greenredis.tempo")


class Live:
    """Everything live in one web process.

    ``queue_size``/``queue_bytes``: messages/bytes queued per socket before the
    oldest are dropped;
    ``max_message``: size cap of a request (bytes); ``send_timeout``: a socket
    that cannot take one frame in this many seconds is closed; ``history``:
    points per metric sent on watch; ``log_backlog``: log lines sent on watch;
    ``max_metrics``: metrics per instance sent in a history (the rest are left
    out and counted in ``hub.stats["metrics_capped"]``); ``history_bytes``: size
    cap of one history/backlog message; ``chunk``: metrics read (and decoded)
    per round trip before yielding to other greenlets.

    A history is read once for every viewer asking for the same instance and
    depth at the same time, in chunks, and sent as it is read.
    """

    def __init__(
        self,
        redis,
        registry,
        queue_size=256,
        max_message=4096,
        send_timeout=30.0,
        history=600,
        log_backlog=1000,
        queue_bytes=4 << 20,
        max_metrics=1000,
        history_bytes=1 << 20,
        chunk=5,
        max_line=MAX_LINE,
    ):
        self.redis = redis
        self.registry = registry
        self.hub = Hub(
            queue_size=queue_size,
            max_message=max_message,
            is_known=registry.is_known,
            queue_bytes=queue_bytes,
            max_line=max_line,
            message_bytes=history_bytes,
        )
        self.max_metrics = max_metrics
        self.chunk = chunk
        self.pace_timeout = 2.0  # per part: a viewer that does not read cannot stall the others long
        self.refused: set[str] = set()  # channels Redis refused (ACL)
        self._link_error: str | None = None  # why the subscription itself is down
        self._refused_error: str | None = None  # why Redis refused a channel
        self._reads: dict[tuple[str, int], list] = {}  # (instance, depth) -> viewers joining that read
        self._sessions: dict[int, tuple[dict, gevent.event.Event]] = {}
        self.max_message = max_message
        self.send_timeout = send_timeout
        self.history = history
        self.log_backlog = log_backlog
        self._sub = None
        self._lock = gevent.lock.Semaphore()
        self._pump = None
        self._closed = False
        #: why the live feed is not working (the subscription is down, or Redis
        #: refused a channel), or None; pages hear it in ``feed`` and ``grid`` messages
        self.feed_error: str | None = None

    # -- process-wide ------------------------------------------------------
    def start(self):
        """Start the registry and the subscription pump (idempotent)."""
        if self._pump is None:
            self.registry.on_change = self._grid_changed
            self.registry.start()
            self._pump = gevent.spawn(self._run_pump)
        return self

    def close_all(self, code=CloseCode.GOING_AWAY):
        """Close every websocket with ``code`` (default 1001: shutting down;
        pages reconnect to another process)."""
        for state, wake in list(self._sessions.values()):
            if state["close"] is None:
                state["close"] = code
            wake.set()

    def stop(self):
        self.close_all()
        self._closed = True
        self.registry.stop()
        if self._pump is not None:
            self._pump.kill()
        if self._sub is not None:
            self._sub.close()

    def _grid_changed(self, snapshot):
        self.hub.broadcast(("grid", None), {"type": "grid", **snapshot, "feed_error": self.feed_error})

    def grid_message(self):
        """The ``grid`` message a page gets: the registry snapshot and ``feed_error``."""
        return {**self.registry.message(), "feed_error": self.feed_error}

    def _feed(self, error):
        """Record whether the subscription works (``error``: None or why not)."""
        self._link_error = None if error is None else str(error) or type(error).__name__
        self._update_feed()

    def _update_feed(self):
        """One feed state from the link and the refused channels; viewers hear of changes."""
        text = self._link_error or (self._refused_error if self.refused else None)
        self.hub.set_feed(text is None, text)
        if text != self.feed_error:
            self.feed_error = text
            self._grid_changed(self.registry.snapshot())

    def _subscription(self):
        if self._sub is None:
            self._sub = subscribe_channels(self.redis)  # sharded on a cluster
        return self._sub

    def _run_pump(self):
        backoff = Backoff(0.1, 5.0)
        failed = False
        while not self._closed:
            try:
                with self._lock:
                    sub = self._subscription()
                self._reconcile()
            except RedisError as e:
                log.warning("tempo: cannot subscribe (%s); retrying", e)
                self._feed(e)
                failed = True
                gevent.sleep(backoff.failure())
                continue
            backoff.reset()
            self._feed(None)
            if failed:  # viewers that came while Redis was away have no history yet
                failed = False
                gevent.spawn(self.run_effects, self.hub.resync())
            try:
                for kind, channel, data in sub:
                    if kind in MESSAGE_KINDS:
                        self._publish(channel, data)
                    elif kind == b"gap":  # lost messages while reconnecting: refill every page
                        gevent.spawn(self._refill, sub)
            except Exception:  # the pump must never die: every viewer depends on it
                log.exception("tempo: subscription pump failed; restarting it")
            if self._closed:
                return
            # the subscription ended (closed under us, or failed): a new one, after a
            # pause so that a client that stays closed cannot make this loop spin
            self._drop_subscription()
            failed = True
            gevent.sleep(backoff.failure())

    def _publish(self, channel, data):
        # One bad message costs only itself: log it (rate-limited) and go on.
        try:
            self.hub.publish(channel, data)
        except Exception:
            self.hub.stats["pump_errors"] += 1
            n = self.hub.stats["pump_errors"]
            if n & (n - 1) == 0:  # the 1st, 2nd, 4th, 8th, ... failure
                log.exception("tempo: cannot fan out a message on %r (%d so far)", channel, n)

    def _drop_subscription(self):
        with self._lock:
            sub, self._sub = self._sub, None
        if sub is not None:
            try:
                sub.close()
            except Exception:
                pass

    def _refill(self, sub):
        # Log markers must not beat the resubscription: confirm it first (a round
        # trip on the subscription's own connection).
        try:
            with self._lock:
                if sub.channels:
                    sub.subscribe(*sub.channels)
        except RedisError as e:
            log.warning("tempo: resubscribe not confirmed (%s)", e)
            self._feed(e)
        else:
            self._feed(None)  # the subscription reconnected by itself: the feed works again
        self.run_effects(self.hub.resync())

    def _reconcile(self):
        """Make the subscription's channels the hub's, under a lock: the order of
        concurrent watch/unwatch calls cannot leave a needed channel unsubscribed."""
        with self._lock:
            sub = self._subscription()
            want = {c.encode() for c in self.hub.channels()}
            self.refused &= {c.decode() for c in want}
            refused = {c.encode() for c in self.refused}
            add, drop = want - (sub.channels - refused), sub.channels - want
            problem = None
            for channel in sorted(add):  # one at a time: a refused one does not hide the rest
                try:
                    sub.subscribe(channel)
                    self.refused.discard(channel.decode())
                except ReplyError as e:  # NOPERM: this user may not read the channel
                    if channel.decode() not in self.refused:
                        log.warning(
                            "tempo: Redis refused the live feed %s (%s): give the Redis user "
                            "channel rights, e.g. ACL SETUSER <user> resetchannels &stats:* &logs:*",
                            channel.decode(),
                            e,
                        )
                    self.refused.add(channel.decode())
                    problem = str(e)
            if drop:
                sub.unsubscribe(*drop)
            if self.refused:
                self._refused_error = problem or self._refused_error or "Redis refused the live channels"
        self._update_feed()

    def feed_ok(self) -> bool:
        """Whether live points/lines can arrive: Redis accepted every needed channel."""
        return self.feed_error is None

    def subscribed(self):
        """The channels this process is subscribed to."""
        return set() if self._sub is None else {c.decode() for c in self._sub.channels} - self.refused

    # -- effects -----------------------------------------------------------
    def run_effects(self, effects):
        if any(isinstance(e, (Subscribe, Unsubscribe)) for e in effects):
            try:
                self._reconcile()
            except RedisError as e:
                log.warning("tempo: subscribe failed: %s", e)
                self._feed(e)
            else:
                self._feed(None)
        for effect in effects:
            if isinstance(effect, ReadHistory):
                self._send_history(effect.viewers, effect.instance, effect.depth)
            elif isinstance(effect, ReadBacklog):
                self._send_backlog(effect.viewer, effect.instance, effect.mark)
            elif isinstance(effect, SendGrid):
                effect.viewer.send(self.grid_message())

    def _send_history(self, viewers, instance, depth=None):
        """Read and send a history, or join the same read in flight: a joiner is
        sent the parts encoded so far (the same strings) and then the rest with
        the others."""
        depth = self.history if depth is None else min(depth, self.history)
        key = (instance, depth)
        read = self._reads.get(key)
        if read is not None:
            self.hub.stats["history_shared"] += 1
            self.hub.history_texts(viewers, instance, read["texts"], final=False)
            read["viewers"].extend(viewers)
            return
        read = self._reads[key] = {"viewers": list(viewers), "texts": []}
        try:
            self._read_history(read, instance, depth)
        finally:
            del self._reads[key]

    def _read_history(self, read, instance, depth):
        self.hub.stats["history_reads"] += 1
        viewers = read["viewers"]
        try:
            metric_names = self._metric_names(instance)
        except (RedisError, ValueError) as e:
            self.hub.refill_failed(viewers, "stats", instance, f"cannot read the history: {e}")
            return
        capped = max(0, len(metric_names) - self.max_metrics)
        if capped:
            self.hub.stats["metrics_capped"] += 1
            n = self.hub.stats["metrics_capped"]
            if n & (n - 1) == 0:
                log.warning(
                    "tempo: %s has %d metrics; showing the first %d (TEMPO_MAX_METRICS) (%d times so far)",
                    instance,
                    len(metric_names),
                    self.max_metrics,
                    n,
                )
            metric_names = metric_names[: self.max_metrics]
        if not depth or not metric_names:
            self.hub.history(viewers, instance, {m: [] for m in metric_names}, capped)
            return
        pending: dict = {}
        units: dict = {}
        pending_bytes = 0
        for i in range(0, len(metric_names), self.chunk):
            try:
                got = self._read_pairs(instance, metric_names[i : i + self.chunk], depth, units)
            except (RedisError, ValueError) as e:
                self.hub.refill_failed(viewers, "stats", instance, f"cannot read the history: {e}")
                return
            pending.update(got)
            pending_bytes += sum(len(pts) for pts in got.values()) * 40  # ~ bytes per encoded point
            last = i + self.chunk >= len(metric_names)
            if pending_bytes >= min(self.hub.message_bytes, 256 << 10) or last:  # small encodes
                texts = self.hub.history_parts(instance, pending, capped, final=last, units=units)
                read["texts"] += texts
                self._pace(viewers, max(len(t) for t in texts), self.pace_timeout)
                self.hub.history_texts(viewers, instance, texts, final=last)
                pending, pending_bytes = {}, 0
            gevent.sleep(0)  # let every other viewer's points and /healthz through

    def _read_pairs(self, instance, metrics, depth, units):
        """``{metric: [[ts, value], ...] oldest first}``: one round trip, and one
        ``json.loads`` per metric (malformed entries skipped, as ``read_history`` does).
        ``units`` gets each metric's unit, from its newest point."""
        replies = self.redis.cmd([["LRANGE", names.history_key(instance, m), 0, depth - 1] for m in metrics])
        out = {}
        for metric, reply in zip(metrics, replies):
            if isinstance(reply, ReplyError) or not reply:  # not a list: someone else's key
                out[metric] = []
                continue
            try:
                points = json.loads(b"[" + b",".join(reversed(reply)) + b"]")
                pairs = [[p["ts"], p["value"]] for p in points]
                if len(pairs) == len(reply) and all(_number(ts) and _number(v) for ts, v in pairs):
                    out[metric] = pairs
                    unit = points[-1].get("unit")
                    if isinstance(unit, str) and names.UNIT_RE.fullmatch(unit):
                        units[metric] = unit
                    continue
            except (ValueError, TypeError, KeyError, RecursionError):
                pass
            pairs = []  # some entry is bad: decode one by one, skipping it
            for raw in reversed(reply):
                try:
                    p = names.decode_point(raw)
                except ValueError:
                    continue
                pairs.append([p["ts"], p["value"]])
                if "unit" in p:
                    units[metric] = p["unit"]
                else:
                    units.pop(metric, None)
            out[metric] = pairs
        return out

    def _pace(self, viewers, size, timeout):
        """Wait (up to ``timeout`` seconds in all) until each viewer has room for
        ``size`` more bytes: a large history goes out as fast as viewers read it."""
        deadline = gevent.get_hub().loop.now() + timeout
        for viewer in viewers:
            while not viewer.room(size) and gevent.get_hub().loop.now() < deadline:
                gevent.sleep(0.01)

    def _metric_names(self, instance):
        """The instance's valid metric names, sorted; foreign members of its metrics
        set are skipped (counted in ``hub.stats["bad_metric"]``), not fatal."""
        metric_names = []
        for raw in self.redis.cmd(["SMEMBERS", names.metrics_key(instance)]):
            try:
                metric_names.append(names.check_metric(raw.decode("utf-8")))
            except ValueError:
                self.hub.stats["bad_metric"] += 1
                n = self.hub.stats["bad_metric"]
                if n & (n - 1) == 0:  # rate-limited: the 1st, 2nd, 4th, ... time
                    log.warning(
                        "tempo: skipping bad metric name %r of %s (%d so far)", raw[:120], instance, n
                    )
        return sorted(metric_names)

    def _send_backlog(self, viewer, instance, mark):
        key = names.log_key(instance)
        try:
            lines, _ = self.redis.transaction(
                [
                    ["LRANGE", key, 0, self.log_backlog - 1],
                    [publish_verb(self.redis), names.log_channel(key), mark],
                ]
            )
            if isinstance(lines, ReplyError):
                lines = []
        except RedisError as e:
            # the viewer's live lines were held for this backlog: release them
            self.hub.refill_failed([viewer], "logs", instance, f"cannot read the log: {e}")
            return
        max_line = self.hub.max_line
        self.hub.backlog(
            viewer,
            instance,
            [x.decode("utf-8", "replace") if len(x) <= max_line else x for x in reversed(lines)],
        )

    # -- one websocket -----------------------------------------------------
    def reject(self, ws, code, message=None):
        """Refuse a websocket: one error message, then close 1008 (policy)."""
        ws = CappedWebSocket.wrap(ws, self.max_message)
        try:
            ws.send("[" + dumps({"type": "error", "error": code, "message": message or ERRORS[code]}) + "]")
            ws.close(CloseCode.POLICY, code)
        except (WebSocketError, OSError):
            pass

    def serve(self, ws):
        """Run one websocket until it closes. Returns the viewer (for its counters)."""
        self.start()
        wake = gevent.event.Event()
        control = []
        ws = CappedWebSocket.wrap(ws, self.max_message)

        def on_control(opcode, payload):
            if len(control) < 16:
                control.append((payload, opcode))
                wake.set()

        ws.on_control = on_control
        viewer = self.hub.connect(wakeup=wake.set)
        state = {"close": None}
        self._sessions[viewer.id] = (state, wake)
        if not self.hub.feed["ok"]:
            viewer.send({"type": "feed", **self.hub.feed})
        writer = gevent.spawn(self._write_loop, ws, viewer, wake, control, state)
        try:
            while not writer.dead:
                try:
                    msg = ws.receive()
                except MessageTooLarge as e:
                    self.hub.error(viewer, "too_large", str(e))
                    continue
                if msg is None:
                    break
                self.run_effects(self.hub.receive(viewer, msg))
        finally:
            self._sessions.pop(viewer.id, None)
            effects = self.hub.disconnect(viewer)
            if effects:
                gevent.spawn(self.run_effects, effects)
            if state["close"] is None:
                state["close"] = ws.close_code or CloseCode.NORMAL
            wake.set()
            writer.join(self.send_timeout + 1)
            writer.kill()
        return viewer

    def _write_loop(self, ws, viewer, wake, control, state):
        try:
            while True:
                wake.wait()
                wake.clear()
                with gevent.Timeout(self.send_timeout):
                    if viewer.slow and state["close"] is None:
                        self.hub.stats["slow_closed"] += 1
                        state["close"] = CloseCode.SLOW
                    while control:
                        ws.send_frame(*control.pop(0))
                    while not viewer.slow:
                        text = viewer.take()
                        if text is None:
                            break
                        ws.send(text)
                    if state["close"] is not None:
                        code = CloseCode.sendable(state["close"])
                        ws.close(code, "slow" if code == CloseCode.SLOW else "")
                        # the reader may still wait for the peer: wake it
                        try:
                            ws.handler.socket.shutdown(socket.SHUT_RD)
                        except (OSError, AttributeError):
                            pass
                        return
        except (WebSocketError, OSError, gevent.Timeout, AttributeError, TypeError):
            # the peer is gone or hopelessly slow: stop the reader too
            try:
                ws.handler.socket.shutdown(socket.SHUT_RDWR)
            except (OSError, AttributeError):
                pass
