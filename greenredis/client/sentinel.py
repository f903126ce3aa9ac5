"""``Sentinel``: clients that follow a Redis Sentinel failover.

``Sentinel(addresses)`` asks the sentinels where a service's master is and listens on
every sentinel it knows for ``+switch-master`` (and the failover leader's earlier
``+promoted-slave``); one set of listeners serves every client made from it.
``master_for(service)`` is a ``greenredis.Redis`` whose connect step asks the Sentinel
for the address and confirms it with ``ROLE``; on a switch the Sentinel closes its
connections to the old master (calls in flight there get ``ConnectionError``, never a
reply from another node), and calls issued meanwhile wait for the new master.
What the Sentinel believes lives in the pure ``sentinel_view``.
"""

from __future__ import annotations

import logging
import os
import random
import weakref
from time import monotonic
from typing import Any, Iterable, Optional

import gevent
from gevent.event import Event

from greenredis.backoff import Backoff
from greenredis.client.connection import Connection, open_connection, pack
from greenredis.client.redis import _MULTI, Redis, _route
from greenredis.client.sentinel_view import (
    CHANNELS,
    Address,
    MasterChanged,
    SentinelFound,
    SentinelView,
    parse_address,
    replica_addresses,
    replica_link_problem,
    role_of,
)
from greenredis.errors import (
    AuthenticationError,
    ConnectionError,
    MasterNotFoundError,
    NoPermissionError,
    ReadOnlyError,
    ReplyError,
    SetupRefusedError,
    TimeoutError,
)
from greenredis.url import ConnectionParams, parse_sentinel_url

__all__ = ["Sentinel", "SentinelRedis"]

log = logging.getLogger(__name__)

_ROLE = pack(("ROLE",))
_TLS_OPTIONS = ("ssl_ca_certs", "ssl_cert_reqs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")
_PING = pack(("PING",))
HEALTH_CHECK_INTERVAL = 1.0  # seconds between PINGs on each sentinel subscription (its default)
LOADING_MOVES = 3  # how often one call moves off a replica that answers -LOADING
REFRESH_EVERY = (
    10.0  # seconds between SENTINEL SENTINELS questions per service (discovery runs often in a failover)
)


def _show(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _refused_here(reply: Any) -> bool:
    """-LOADING (a full resync or a restart in progress) or -MASTERDOWN (its link is down and
    replica-serve-stale-data is no): a replica that ran nothing and that the sentinels still
    call healthy (sentinel.c takes both for a valid answer to its PING)."""
    return isinstance(reply, ReplyError) and reply.prefix in ("LOADING", "MASTERDOWN")


_RETIRING: weakref.WeakSet[Connection] = weakref.WeakSet()  # shared connections left to drain


def _close_when_answered(conn: Connection, reason: ConnectionError) -> None:
    """Close a shared connection once the calls in flight on it have their replies: those
    a loading replica refused move to another (closing it at once failed them instead)."""
    try:
        conn.call(_PING, conn.params.connect_timeout)  # replies come in order: theirs first
    except (ConnectionError, TimeoutError):
        pass
    finally:
        conn.close(reason)


def _close_outcome(greenlet: gevent.Greenlet) -> None:
    if isinstance(greenlet.value, Connection):
        greenlet.value.close()


def _tls_refused(error: BaseException) -> bool:
    """A TLS failure that waiting will not cure (an unverifiable certificate, a server that
    does not speak TLS, a bad CA file), as opposed to a node that died mid-handshake."""
    text = str(error)
    if "TLS setup" in text:
        return True
    # "[SSL: UNEXPECTED_EOF_WHILE_READING]" is a node that went away mid-handshake
    return "TLS handshake" in text and "[SSL" in text and "EOF" not in text


class _WrongRole(ConnectionError):
    """The node is not what the sentinels said (a master that is a replica by now)."""


class Sentinel:
    """The sentinels of one or more services, and the clients that follow them.

    ``sentinels``: ``(host, port)`` pairs (more are learnt from ``SENTINEL SENTINELS`` and
    ``+sentinel``). sentinel_password/sentinel_username: the sentinels' own credentials;
    sentinel_timeout bounds each question to one sentinel; failover_timeout is how long a
    connect waits for a master that answers (calls with a timeout wait no longer than it).
    sentinel_ssl: TLS to the sentinels, verified with the ``ssl_*`` keywords given for the
    data nodes (``ssl_ca_certs=``...; TLS to the data nodes is ``ssl=True``, as for ``Redis``).
    sentinel_kwargs: more ``Redis()`` options for the sentinel connections (``ssl=True``...);
    their ``health_check_interval`` (default 1 s, 0: never) is how often each subscription
    is PINGed: one whose sentinel does not answer within sentinel_timeout (a paused or
    partitioned sentinel keeps its TCP connection open) is dropped and made again.
    Other keywords are defaults for every ``master_for``/``replica_for`` client.

    ``stats`` counts what was survived: ``subscriptions_lost`` (a subscription that had
    answered and stopped answering its PING), ``subscriptions_refused`` (a sentinel refused SUBSCRIBE, an ACL
    user without the right: the sentinels are then asked every health_check_interval
    instead), ``replicas_loading`` (a replica skipped because it answered
    -LOADING), ``replicas_unlinked`` (one skipped because its ROLE said its link was down).
    """

    def __init__(
        self,
        sentinels: Iterable[tuple[str, int]],
        sentinel_password: Optional[str] = None,
        sentinel_username: Optional[str] = None,
        sentinel_timeout: float = 0.5,
        failover_timeout: float = 30.0,
        sentinel_kwargs: Optional[dict[str, Any]] = None,
        sentinel_ssl: bool = False,
        **connection_kwargs: Any,
    ) -> None:
        for name, value in (("sentinel_timeout", sentinel_timeout), ("failover_timeout", failover_timeout)):
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"{name} must be a number of seconds > 0, not {value!r}")
        self.view = SentinelView(sentinels)
        self.sentinel_timeout = sentinel_timeout
        self.failover_timeout = failover_timeout
        options = dict(sentinel_kwargs or {})
        if sentinel_ssl:  # the sentinels speak TLS, verified as the data nodes are
            options.setdefault("ssl", True)
            for name in _TLS_OPTIONS:
                if connection_kwargs.get(name) is not None:
                    options.setdefault(name, connection_kwargs[name])
        options.setdefault("password", sentinel_password)
        options.setdefault("username", sentinel_username)
        options.setdefault("connect_timeout", sentinel_timeout)
        options.setdefault("timeout", sentinel_timeout)
        options.setdefault("dead_after", None)
        options.setdefault("health_check_interval", HEALTH_CHECK_INTERVAL)
        try:
            self._sentinel_params = ConnectionParams(**options)  # checked now, not at each question
        except TypeError as e:
            raise TypeError(f"sentinel_kwargs: {e}") from None
        self.connection_kwargs = connection_kwargs
        self.closed = False
        self.stats = {
            "subscriptions_lost": 0,
            "subscriptions_refused": 0,
            "replicas_loading": 0,
            "replicas_unlinked": 0,
        }
        self._clients: weakref.WeakSet[SentinelRedis] = weakref.WeakSet()
        self._changed: dict[str, Event] = {}
        self._refreshed: dict[str, float] = {}
        self._callbacks: list = []
        self._reset_after_fork()

    def _reset_after_fork(self) -> None:
        # in a forked child the parent's subscription greenlets live on, waiting on
        # connections the fork abandoned: end them (their sockets stay the parent's)
        for greenlet in getattr(self, "_watchers", {}).values():
            greenlet.kill(block=False)
        self._pid = os.getpid()
        self._polling: Optional[gevent.Greenlet] = None
        self._watchers: dict[Address, gevent.Greenlet] = {}
        self._watch_conns: dict[Address, Connection] = {}

    def __repr__(self) -> str:
        return f"<Sentinel {', '.join(_show(a) for a in self.view.sentinels)}>"

    # -- the public API ------------------------------------------------------------------

    def master_for(self, service: str, **kwargs: Any) -> SentinelRedis:
        """A ``Redis`` that always talks to the current master of ``service``; takes every
        keyword ``Redis()`` takes (password, db, timeout, ssl_...)."""
        return SentinelRedis(self, service, "master", **{**self.connection_kwargs, **kwargs})

    def replica_for(self, service: str, **kwargs: Any) -> SentinelRedis:
        """A ``Redis`` that reads from a replica of ``service`` (a random healthy one, another
        after a connection loss), or from the master when no replica answers."""
        return SentinelRedis(self, service, "replica", **{**self.connection_kwargs, **kwargs})

    def discover_master(self, service: str) -> Address:
        """Where the sentinels say the master of ``service`` is (not confirmed with ROLE)."""
        return self._discover(service)

    def discover_replicas(self, service: str) -> list[Address]:
        """The replicas of ``service`` the first answering sentinel calls healthy."""
        reply, _ = self._ask_any(service, "SENTINEL", "REPLICAS", service)
        return replica_addresses(reply)

    def master_address(self, service: str) -> Address:
        """The master of ``service`` as this Sentinel believes it now (announcements included),
        else as the sentinels say; ConnectionError once closed."""
        self._check_open()
        return self.view.master(service) or self._discover(service)

    def on_switch(self, callback: Any) -> None:
        """Call ``callback(service, old, new)`` (addresses; ``old`` may be None) in a greenlet of
        its own whenever this Sentinel moves a service it follows (one a client of it or
        ``master_address`` asked for) to a new master; starts listening."""
        self._callbacks.append(callback)
        self._watch()

    def close(self) -> None:
        """End the subscriptions to the sentinels. Clients made from it fail their next
        connect with ConnectionError; close them yourself."""
        self.closed = True
        for greenlet in list(self._watchers.values()):
            greenlet.kill(block=False)
        for conn in list(self._watch_conns.values()):
            conn.close()
        self._watchers.clear()
        self._watch_conns.clear()

    def __enter__(self) -> Sentinel:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- asking sentinels ----------------------------------------------------------------

    def _params(self, address: Address) -> ConnectionParams:
        return self._sentinel_params.replace(host=address[0], port=address[1])

    def _ask(self, address: Address, *command: Any) -> Any:
        """One command to one sentinel, on a connection of its own (questions are rare:
        at a connect, after a switch); its reply, a ReplyError raised."""
        self._check_open()
        conn = open_connection(self._params(address))
        try:
            reply = conn.call(pack(command), self.sentinel_timeout)
        finally:
            conn.close()
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def _ask_any(self, service: str, *command: Any) -> tuple[Any, Address]:
        """Ask the sentinels in turn until one answers; (reply, who)."""
        errors, unknown = [], []
        for address in list(self.view.sentinels):
            try:
                reply = self._ask(address, *command)
            except (ConnectionError, TimeoutError, ReplyError) as e:
                if isinstance(e, ReplyError) and "no such master" in str(e).lower():
                    unknown.append(_show(address))  # it answered: it knows no such service
                else:
                    errors.append(f"{_show(address)}: {e}")
                continue
            self.view.answered(address)
            return reply, address
        if unknown:
            more = f"; unreachable: {'; '.join(errors)}" if errors else ""
            raise MasterNotFoundError(
                f"no sentinel knows a master named {service!r} (asked {', '.join(unknown)}){more}"
            )
        raise ConnectionError(f"no sentinel of {service!r} answered: {'; '.join(errors)}")

    def _discover(self, service: str) -> Address:
        """Ask the sentinels in turn for the master of ``service`` until one names a master we
        have no reason to distrust; ``MasterNotFoundError`` if none knows the name."""
        self._check_open()
        answers: list[Address] = []
        unknown: list[str] = []
        errors: list[str] = []
        asked = None
        for address in list(self.view.sentinels):
            try:
                reply = self._ask(address, "SENTINEL", "GET-MASTER-ADDR-BY-NAME", service)
                master = parse_address(reply)
            except (ConnectionError, TimeoutError, ReplyError, ValueError) as e:
                hint = ""
                if isinstance(e, AuthenticationError):
                    hint = " (the sentinels' password is sentinel_password)"
                elif isinstance(e, ReplyError) and e.prefix == "NOAUTH":
                    hint = " (the sentinels need a password: sentinel_password)"
                elif "unknown command" in str(e).lower():
                    hint = " (not a sentinel?)"
                errors.append(f"{_show(address)}: {str(e).strip()}{hint}")
                continue
            if master is None:
                unknown.append(_show(address))
                continue
            self.view.answered(address)
            asked = asked or address
            answers.append(master)
            if self.view.choose(service, [master]) == master:
                break  # not superseded: good enough
        chosen = self.view.choose(service, answers)
        if chosen is None:
            if unknown:
                more = f"; unreachable: {'; '.join(errors)}" if errors else ""
                raise MasterNotFoundError(
                    f"no sentinel knows a master named {service!r} (asked {', '.join(unknown)}){more}"
                )
            raise ConnectionError(f"no sentinel of {service!r} answered: {'; '.join(errors)}")
        if asked is not None and monotonic() - self._refreshed.get(service, -REFRESH_EVERY) >= REFRESH_EVERY:
            self._refreshed[service] = monotonic()
            gevent.spawn(self._refresh_sentinels, service, asked)
        return chosen

    def _refresh_sentinels(self, service: str, address: Address) -> None:
        try:
            reply = self._ask(address, "SENTINEL", "SENTINELS", service)
        except (ConnectionError, TimeoutError, ReplyError):
            return
        self._apply(self.view.sentinels_reported(reply))

    def _check_open(self) -> None:
        if self.closed:
            raise ConnectionError(f"{self!r} is closed")

    # -- connecting clients --------------------------------------------------------------

    def _connect(self, client: SentinelRedis, params: ConnectionParams, on_push: Any) -> Connection:
        self._check_open()
        self._watch()
        if client.role == "replica":
            conn = self._connect_replica(client.service, params, on_push)
            if conn is not None:
                return conn
        return self._connect_master(client.service, params, on_push)

    def _connect_master(self, service: str, params: ConnectionParams, on_push: Any) -> Connection:
        """A connection to the master of ``service``, confirmed with ROLE; waits through a
        failover up to ``failover_timeout`` (woken at once by an announcement)."""
        deadline = monotonic() + self.failover_timeout
        backoff = Backoff(0.02, 0.5)
        while True:
            generation = self.view.generation(service)
            address = self.view.master(service) or self._discover(service)
            try:
                conn = self._open_unless_moved(service, address, params, on_push)
            except (AuthenticationError, SetupRefusedError):  # wrong options: not a failover
                raise
            except (ConnectionError, TimeoutError) as e:
                if _tls_refused(e):
                    raise
                self.view.failed(service, address)
                last = f"{_show(address)}: {e}"
            else:
                if conn is None:
                    continue  # an announcement named another master while this one hung: go there
                current = self.view.master(service)
                if current is not None and current != address:
                    conn.close()  # an announcement moved the master while we connected: go there
                    continue
                if self.view.generation(service) != generation and current is None:
                    log.debug("%s: %s confirmed after a switch began", service, _show(address))
                self._apply(self.view.confirmed(service, address))
                return conn
            left = deadline - monotonic()
            if left <= 0:
                raise ConnectionError(
                    f"no master of {service!r} answered within failover_timeout={self.failover_timeout}s "
                    f"(last: {last})"
                )
            self._changed_event(service).wait(min(left, backoff.failure()))

    def _open_unless_moved(
        self, service: str, address: Address, params: ConnectionParams, on_push: Any
    ) -> Optional[Connection]:
        """``_open_checked`` on the master ``address``, given up (None) if the master of
        ``service`` moves elsewhere meanwhile: a paused or cut-off master accepts the TCP
        connection and then answers nothing until connect_timeout."""
        moved = self._changed_event(service)

        def attempt() -> Any:  # returns its exception: an opener must not die "unhandled"
            try:
                return self._open_checked(service, address, params, on_push, "master")
            except Exception as e:
                return e

        opener = gevent.spawn(attempt)
        try:
            while True:
                gevent.wait([opener, moved], count=1)
                if opener.ready() or self.view.master(service) == address:
                    outcome = opener.get()  # its connection, or its exception
                    if isinstance(outcome, BaseException):
                        raise outcome
                    return outcome
                if self.view.master(service) is not None:
                    break  # announced elsewhere
                moved = self._changed_event(service)  # a loss, not a new master: keep trying this one
        except BaseException:  # we were killed or timed out: nobody takes what the opener makes
            opener.kill(block=False)  # open_connection closes what it opened
            opener.link(_close_outcome)  # and one it finished meanwhile
            raise
        opener.kill()
        if isinstance(opener.value, Connection):
            opener.value.close()  # it finished as it was told to stop
        log.debug("%s: gave up connecting to %s: the master moved", service, _show(address))
        return None

    def _connect_replica(self, service: str, params: ConnectionParams, on_push: Any) -> Optional[Connection]:
        try:
            reply, _ = self._ask_any(service, "SENTINEL", "REPLICAS", service)
        except ConnectionError:
            return None  # the master path says which sentinels failed
        replicas = replica_addresses(reply)
        random.shuffle(replicas)
        for address in replicas:
            try:
                return self._open_checked(service, address, params, on_push, "slave")
            except (AuthenticationError, SetupRefusedError):  # wrong options: not a failover
                raise
            except (ConnectionError, TimeoutError) as e:
                if _tls_refused(e):
                    raise
                log.debug("%s: replica %s refused: %s", service, _show(address), e)
        return None

    def _open_checked(
        self, service: str, address: Address, params: ConnectionParams, on_push: Any, role: str
    ) -> Connection:
        where = _show(address)

        def check(conn: Connection, timeout: Optional[float]) -> None:
            start = monotonic()
            reply = conn.call(_ROLE, timeout)
            if isinstance(reply, ReplyError) and not isinstance(reply, NoPermissionError):
                if reply.prefix == "NOAUTH":  # no point waiting for another master: say it
                    raise AuthenticationError(f"{where} requires a password ({reply}): pass password=")
                raise ConnectionError(f"ROLE on {where} failed: {reply}")
            # NOPERM: an ACL user without ROLE: trust the sentinels, as redis-py always does
            if not isinstance(reply, ReplyError):
                actual = role_of(reply)
                if actual != role:
                    raise _WrongRole(f"{where} is a {actual}, not a {role} of {service!r}")
            if role != "slave":
                return
            problem = None if isinstance(reply, ReplyError) else replica_link_problem(reply)
            if problem is not None:
                self.stats["replicas_unlinked"] += 1
                raise ConnectionError(f"replica {where} of {service!r} skipped: {problem}")
            # ROLE runs while a node loads its dataset; PING does not
            left = None if timeout is None else max(0.001, timeout - (monotonic() - start))
            pong = conn.call(_PING, left)
            if _refused_here(pong):
                self.stats["replicas_loading" if pong.prefix == "LOADING" else "replicas_unlinked"] += 1
                raise ConnectionError(f"replica {where} of {service!r} skipped: {pong}")

        conn = open_connection(params.replace(host=address[0], port=address[1]), on_push=on_push, check=check)
        conn.sentinel_role = role  # which kind of node it is, for a -LOADING reply on it later
        return conn

    # -- following announcements ---------------------------------------------------------

    def _changed_event(self, service: str) -> Event:
        event = self._changed.get(service)
        if event is None:
            event = self._changed[service] = Event()
        return event

    def _apply(self, effects: list) -> None:
        for effect in effects:
            if isinstance(effect, MasterChanged):
                old = _show(effect.old) if effect.old else "unknown"
                log.warning("%s: master %s -> %s (%s)", effect.service, old, _show(effect.new), effect.source)
                reason = (
                    f"{effect.service!r} failed over to {_show(effect.new)} ({effect.source}): "
                    "this call's connection to the old master was closed; it may or may not have run"
                )
                for client in list(self._clients):
                    if client.service == effect.service and client.role == "master":
                        client._drop_all_but(effect.new, reason)
                event = self._changed.pop(effect.service, None)
                if event is not None:
                    event.set()
                for callback in self._callbacks:
                    gevent.spawn(self._call_back, callback, effect)
            elif isinstance(effect, SentinelFound) and self._watchers:
                self._start_watcher(effect.address)

    @staticmethod
    def _call_back(callback: Any, effect: MasterChanged) -> None:
        try:
            callback(effect.service, effect.old, effect.new)
        except Exception:
            log.exception("%s: an on_switch callback %r failed; ignored", effect.service, callback)

    def _replica_refused(self, service: str, address: Address, reply: ReplyError) -> None:
        """A replica client got -LOADING (a full resync began, or a restart) or -MASTERDOWN
        from ``address``: every replica client of ``service`` drops its connections there and
        reconnects to another (the connect check refuses a node that still loads, or whose
        link is down)."""
        self.stats["replicas_loading" if reply.prefix == "LOADING" else "replicas_unlinked"] += 1
        log.info("%s: replica %s answered %s: reading elsewhere", service, _show(address), reply.prefix)
        reason = ConnectionError(f"replica {_show(address)} of {service!r} answered {reply}")
        for client in list(self._clients):
            if client.service == service and client.role == "replica":
                for conn in list(client._owned.conns):
                    if (conn.params.host, conn.params.port) != address:
                        continue
                    if conn is client._shared:  # new calls connect elsewhere; those in flight
                        client._shared = None  # get their own replies (and move on -LOADING)
                        _RETIRING.add(conn)
                        gevent.spawn(_close_when_answered, conn, reason)
                    elif conn not in _RETIRING:
                        conn.close(reason)

    def _demoted(self, service: str, address: Address, message: str) -> None:
        """A master client got -READONLY from ``address``: no client of ours writes there again."""
        self.view.failed(service, address)
        for client in list(self._clients):
            if client.service == service and client.role == "master":
                for conn in list(client._owned.conns):
                    if (conn.params.host, conn.params.port) == address:
                        conn.close(ConnectionError(message))

    def _watch(self) -> None:
        """Listen to every known sentinel (once; again in a forked child)."""
        if self._pid != os.getpid():
            self._reset_after_fork()
        if self.closed:
            return
        for address in self.view.sentinels:
            if address not in self._watchers:
                self._start_watcher(address)

    def _start_watcher(self, address: Address) -> None:
        if address not in self._watchers and not self.closed:
            self._watchers[address] = gevent.spawn(self._watch_one, address)

    def _watch_one(self, address: Address) -> None:
        """Subscribe to one sentinel's announcements, again after every disconnect (and then
        recheck each service: an announcement may have gone by meanwhile)."""
        backoff = Backoff(0.1, 2.0)
        first = True
        while not self.closed and self._pid == os.getpid():
            ended = Event()
            heard = [0, False]  # replies on this subscription so far (PONGs too); refused?

            def on_push(reply: Any, heard: list = heard) -> None:
                heard[0] += 1
                if isinstance(reply, ReplyError) and not heard[1]:
                    heard[1] = True
                    self._refused(address, reply)
                    return
                self._on_push(address, reply)

            try:
                conn = open_connection(
                    self._params(address),
                    on_push=on_push,
                    on_close=lambda conn, exc, ended=ended: ended.set(),
                )
            except (ConnectionError, TimeoutError) as e:
                log.debug("sentinel %s: %s", _show(address), e)
                gevent.sleep(backoff.failure())
                continue
            self._watch_conns[address] = conn
            try:
                conn.send(pack(("SUBSCRIBE", *CHANNELS)))
                if not first:
                    for service in self.view.services():
                        gevent.spawn(self._recheck, service)
                first = False
                if self._watch_until_silent(address, conn, heard, ended):
                    backoff.reset()  # it served us for a while: reconnect soon
            finally:
                conn.close()
                if self._watch_conns.get(address) is conn:  # not a forked child's own
                    del self._watch_conns[address]
            gevent.sleep(backoff.failure())

    def _watch_until_silent(self, address: Address, conn: Connection, heard: list, ended: Event) -> bool:
        """Wait until the subscription ends, PINGing it every health_check_interval: a
        sentinel that does not answer (any reply counts) within sentinel_timeout is taken
        for lost and the connection closed. Returns whether it ever answered."""
        interval = self._sentinel_params.health_check_interval
        if not interval:
            ended.wait()
            return True
        while not ended.wait(interval):
            before = heard[0]
            conn.send(_PING)
            if ended.wait(self.sentinel_timeout):
                break
            if heard[0] != before and heard[1]:
                self._poll()  # no announcements from this one: ask instead
            elif heard[0] == before:
                if before:  # it had answered: a subscription lost (not one more try at a dead one)
                    self.stats["subscriptions_lost"] += 1
                    log.warning(
                        "sentinel %s did not answer a PING on its subscription within %ss: subscribing again",
                        _show(address),
                        self.sentinel_timeout,
                    )
                else:
                    log.debug("sentinel %s still does not answer", _show(address))
                conn.close(ConnectionError(f"sentinel {_show(address)} stopped answering"))
                break
        return heard[0] > 0

    def _refused(self, address: Address, reply: ReplyError) -> None:
        """A sentinel refused SUBSCRIBE (an ACL user without the rights): count it, say it
        once per connection, and poll the sentinels while subscribed to nothing there."""
        self.stats["subscriptions_refused"] += 1
        every = self._sentinel_params.health_check_interval
        # NOAUTH: every question to that sentinel fails the same way, and the caller's error says so
        log.log(
            logging.DEBUG if reply.prefix == "NOAUTH" else logging.WARNING,
            "sentinel %s refused the subscription (%s): %s",
            _show(address),
            reply,
            f"asking the sentinels every {every}s instead" if every else "switches are found late",
        )

    def _poll(self) -> None:
        """Ask the sentinels about every service followed (one poll at a time)."""
        if self._polling is not None and not self._polling.dead:
            return
        self._polling = gevent.spawn(self._recheck_all)

    def _recheck_all(self) -> None:
        for service in self.view.services():
            self._recheck(service)

    def _on_push(self, address: Address, reply: Any) -> None:
        """In the event loop: one message from a sentinel's subscription."""
        if isinstance(reply, ReplyError):
            log.warning("sentinel %s: %s", _show(address), reply)
            return
        if isinstance(reply, list) and len(reply) == 3 and reply[0] == b"message":
            self._apply(self.view.announced(reply[1], reply[2]))

    def _recheck(self, service: str) -> None:
        """After a subscription gap: does a sentinel name another master that says so?"""
        try:
            address = self._discover(service)
            if address == self.view.master(service):
                return
            conn = self._open_checked(service, address, self._sentinel_data_params(service), None, "master")
        except (ConnectionError, TimeoutError, ValueError):
            return
        conn.close()
        self._apply(self.view.confirmed(service, address))

    def _sentinel_data_params(self, service: str) -> ConnectionParams:
        for client in list(self._clients):
            if client.service == service:
                return client.params
        raise ConnectionError(f"no client of {service!r}")


class SentinelRedis(Redis):
    """A ``Redis`` of a Sentinel service: made by ``Sentinel.master_for``/``replica_for``."""

    def __init__(self, sentinel: Sentinel, service: str, role: str = "master", **kwargs: Any) -> None:
        if not service or not isinstance(service, str):
            raise ValueError(f"a service name is a non-empty str, not {service!r}")
        self.sentinel = sentinel
        self.service = service
        self.role = role
        self._close_sentinel: Optional[weakref.finalize] = None
        super().__init__(**kwargs)
        sentinel._clients.add(self)
        sentinel._watch()

    @classmethod
    def from_url(cls, url=None, max_blocking=64, **options):
        """A ``master_for`` client of ``redis+sentinel://...``; it owns its ``Sentinel``."""
        parsed = parse_sentinel_url(url, **options)
        sentinel = Sentinel(parsed.sentinels, **parsed.sentinel_options())
        client = cls(sentinel, parsed.service, "master", params=parsed.params, max_blocking=max_blocking)
        # its Sentinel ends with it: at close(), or when it is dropped unclosed (the
        # subscription greenlets hold the Sentinel, not the client)
        client._close_sentinel = weakref.finalize(client, sentinel.close)
        client._close_sentinel.atexit = False  # the process ends them; no greenlet work at exit
        return client

    def __repr__(self) -> str:
        return f"<Redis {self.role} of {self.service!r} via {self.sentinel!r} db={self.params.db}>"

    def _where(self) -> str:
        return f"the {self.role} of {self.service!r}"

    def _open_connection(self, params: ConnectionParams, on_push: Any) -> Connection:
        conn = self.sentinel._connect(self, params, on_push)
        self.params = self.params.replace(host=conn.params.host, port=conn.params.port)
        return conn

    def _drop_all_but(self, address: Address, reason: str) -> None:
        for conn in list(self._owned.conns):
            if (conn.params.host, conn.params.port) != address:
                conn.close(ConnectionError(reason))

    # -READONLY: the node we write to was demoted without our hearing of it
    def _call_one(self, first, command, timeout):
        if self.role == "replica" and not _route(first, command, shared=True):
            return self._on_a_replica(pack(command), timeout, False)
        reply = super()._call_one(first, command, timeout)
        if reply.__class__ is ReadOnlyError and self.role == "master":
            self._demoted(reply)
        return reply

    def _call_many(self, packed_list, timeout):
        if self.role == "replica":
            return self._on_a_replica(packed_list, timeout, True)
        replies = super()._call_many(packed_list, timeout)
        if self.role == "master" and any(r.__class__ is ReadOnlyError for r in replies):
            self._demoted(next(r for r in replies if r.__class__ is ReadOnlyError))
        return replies

    def _on_a_replica(self, packed: Any, timeout: Optional[float], many: bool) -> Any:
        """A call on the shared connection that moves to another replica (or the master) when
        the replica answers -LOADING or -MASTERDOWN: nothing ran there. Of a batch, only the
        commands so refused are sent again (those that got a reply ran: PUBLISH runs on a
        loading replica); a transaction is sent whole again (nothing of it ran)."""
        deadline = None if timeout is None else monotonic() + timeout
        moves = 0
        todo = None  # of a batch, the positions to send again (None: all of it)
        while True:
            conn, left = self._shared_conn(timeout)
            if many:
                if todo is None:
                    reply = list(conn.call_many(packed, left))
                else:  # what did get a reply ran there (a PUBLISH, a write to a writable replica)
                    for i, r in zip(todo, conn.call_many([packed[i] for i in todo], left)):
                        reply[i] = r
                refused = [
                    i for i in (range(len(reply)) if todo is None else todo) if _refused_here(reply[i])
                ]
                refusal = reply[refused[0]] if refused else None
                # a refused MULTI ... EXEC ran nothing (EXECABORT): all of it again
                todo = None if packed and packed[0] is _MULTI else refused
            else:
                reply = conn.call(packed, left)
                refusal = reply if _refused_here(reply) else None
            if refusal is None or moves >= LOADING_MOVES or getattr(conn, "sentinel_role", None) != "slave":
                return reply
            moves += 1
            self.sentinel._replica_refused(self.service, (conn.params.host, conn.params.port), refusal)
            if deadline is not None:
                timeout = deadline - monotonic()
                if timeout <= 0:
                    raise TimeoutError(
                        f"{_show((conn.params.host, conn.params.port))} is loading and the call's "
                        "timeout ran out before another replica answered"
                    )

    def _demoted(self, reply: ReplyError) -> None:
        address = (self.params.host, self.params.port)
        message = (
            f"{_show(address)} is no longer the master of {self.service!r} ({reply}): "
            "nothing was written; the next call goes to the new master"
        )
        self.sentinel._demoted(self.service, address, message)
        raise ConnectionError(message)

    def close(self) -> None:
        super().close()
        if self._close_sentinel is not None:
            self._close_sentinel()
