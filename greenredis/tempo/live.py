"""The gevent shell around ``Hub``: one Redis subscription per channel per process,
one reader and one writer greenlet per websocket.

The reader (the request's own greenlet) feeds requests to the hub and carries out
the effects; the writer is the only greenlet that ever writes the socket (data,
pongs, the close frame). A pump greenlet reads the process's single
``Subscription`` and hands each message to ``Hub.publish``.
"""

import logging
import socket

import gevent
import gevent.event
import gevent.lock
from geventwebsocket.exceptions import WebSocketError

from greenredis.backoff import Backoff
from greenredis.errors import RedisError, ReplyError
from greenredis.telemetry import names
from greenredis.telemetry.stats import read_history
from greenredis.tempo.hub import ERRORS, Hub, dumps
from greenredis.tempo.websocket import CappedWebSocket, MessageTooLarge

__all__ = ["Live"]

log = logging.getLogger("greenredis.tempo")


class Live:
    """Everything live in one web process.

    ``queue_size``/``queue_bytes``: messages/bytes queued per socket before the
    oldest are dropped;
    ``max_message``: size cap of a request (bytes); ``send_timeout``: a socket
    that cannot take one frame in this many seconds is closed; ``history``:
    points per metric sent on watch; ``log_backlog``: log lines sent on watch.
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
    ):
        self.redis = redis
        self.registry = registry
        self.hub = Hub(
            queue_size=queue_size,
            max_message=max_message,
            is_known=registry.is_known,
            queue_bytes=queue_bytes,
        )
        self.max_message = max_message
        self.send_timeout = send_timeout
        self.history = history
        self.log_backlog = log_backlog
        self._sub = None
        self._lock = gevent.lock.Semaphore()
        self._pump = None
        self._closed = False
        #: why the live feed (the Redis subscription) is not working, or None; the
        #: pages show it (grid messages carry it as ``feed_error``)
        self.feed_error = None

    # -- process-wide ------------------------------------------------------
    def start(self):
        """Start the registry and the subscription pump (idempotent)."""
        if self._pump is None:
            self.registry.on_change = self._grid_changed
            self.registry.start()
            self._pump = gevent.spawn(self._run_pump)
        return self

    def stop(self):
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
        """Record whether the live feed works (``error``: None or why not); pages hear of changes."""
        text = None if error is None else str(error) or type(error).__name__
        if text != self.feed_error:
            self.feed_error = text
            self._grid_changed(self.registry.snapshot())

    def _subscription(self):
        if self._sub is None:
            self._sub = self.redis.subscribe()
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
                    if kind == b"message":
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
            add, drop = want - sub.channels, sub.channels - want
            if add:
                sub.subscribe(*add)
            if drop:
                sub.unsubscribe(*drop)

    def subscribed(self):
        """The channels this process is subscribed to."""
        return set() if self._sub is None else {c.decode() for c in self._sub.channels}

    # -- effects -----------------------------------------------------------
    def run_effects(self, effects):
        if any(e[0] in ("subscribe", "unsubscribe") for e in effects):
            try:
                self._reconcile()
            except RedisError as e:
                log.warning("tempo: subscribe failed: %s", e)
                self._feed(e)
            else:
                self._feed(None)
        for effect in effects:
            kind = effect[0]
            if kind == "history":
                self._send_history(*effect[1:])
            elif kind == "backlog":
                self._send_backlog(*effect[1:])
            elif kind == "grid":
                effect[1].send(self.grid_message())

    def _send_history(self, viewers, instance, depth=None):
        try:
            metric_names = self._metric_names(instance)
            depth = self.history if depth is None else min(depth, self.history)
            metrics = (
                read_history(self.redis, instance, metric_names, depth)
                if depth
                else {n: [] for n in metric_names}
            )
        except (RedisError, ValueError) as e:
            self.hub.refill_failed(viewers, "stats", instance, f"cannot read the history: {e}")
            return
        self.hub.history(viewers, instance, metrics)

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
                [["LRANGE", key, 0, self.log_backlog - 1], ["PUBLISH", names.log_channel(key), mark]]
            )
            if isinstance(lines, ReplyError):
                lines = []
        except RedisError as e:
            # the viewer's live lines were held for this backlog: release them
            self.hub.refill_failed([viewer], "logs", instance, f"cannot read the log: {e}")
            return
        self.hub.backlog(viewer, instance, [x.decode("utf-8", "replace") for x in reversed(lines)])

    # -- one websocket -----------------------------------------------------
    def reject(self, ws, code, message=None):
        """Refuse a websocket: one error message, then close 1008 (policy)."""
        ws = CappedWebSocket.wrap(ws, self.max_message)
        try:
            ws.send("[" + dumps({"type": "error", "error": code, "message": message or ERRORS[code]}) + "]")
            ws.close(1008, code)
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
            effects = self.hub.disconnect(viewer)
            if effects:
                gevent.spawn(self.run_effects, effects)
            state["close"] = ws.close_code or 1000
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
                    while control:
                        ws.send_frame(*control.pop(0))
                    while True:
                        text = viewer.take()
                        if text is None:
                            break
                        ws.send(text)
                    if state["close"] is not None:
                        code = state["close"]
                        ws.close(
                            code
                            if code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1011) or 3000 <= code < 5000
                            else 1000
                        )
                        return
        except (WebSocketError, OSError, gevent.Timeout, AttributeError, TypeError):
            # the peer is gone or hopelessly slow: stop the reader too
            try:
                ws.handler.socket.shutdown(socket.SHUT_RDWR)
            except (OSError, AttributeError):
                pass
