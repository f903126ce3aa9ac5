"""``Cluster``: the pipelined client for Redis Cluster.

One ``Redis`` per node (so one auto-pipelined connection per primary, shared by every
greenlet, plus its connections for blocking commands and ``dedicated()``); the slot map
and key positions come from ``greenredis.client.slots`` (pure), this module only sends.

A batch is split per node; each node's part is one write, every part is queued before
any reply is awaited, and the replies are put back in the caller's order. ``MOVED``
updates the map (and refreshes it in the background, once) and resends; ``ASK`` sends
``ASKING`` + the command to the target; ``TRYAGAIN``/``CLUSTERDOWN`` and a node that
cannot be reached before anything was sent are retried with backoff within the call's
timeout (``retry_for`` seconds when the call has none).
"""

from __future__ import annotations

import os
import random
import weakref
from itertools import compress
from operator import itemgetter, not_
from time import monotonic

import gevent
from gevent import Timeout, get_hub
from gevent.event import AsyncResult
from gevent.hub import Waiter

from greenredis.backoff import Backoff
from greenredis.client.connection import pack, pack_many
from greenredis.client.redis import _DEFAULT, _EMPTY, _EXEC, _MULTI, _SPECIAL, Redis, _first, _route
from greenredis.client.slots import (
    CommandTable,
    SlotMap,
    crossslot,
    key_slot,
    slot_of_keys,
    split_keys,
)
from greenredis.errors import (
    AskError,
    AuthenticationError,
    ConnectionError,
    MovedError,
    NoPermissionError,
    RedisError,
    ReplyError,
    TimeoutError,
    WatchError,
)
from greenredis.url import ConnectionParams, parse_cluster_url, redact_text

__all__ = ["Cluster"]

_ASKING = pack(("ASKING",))
_READONLY = pack(("READONLY",))
_RETRY_PREFIXES = ("TRYAGAIN", "CLUSTERDOWN")
_COUNTERS = ("moved", "ask", "tryagain", "clusterdown", "unsent_retries", "refreshes")
MAX_REDIRECTS = 16  # MOVED/ASK hops for one command before giving up (as redis-py)
_FIRST = itemgetter(0)
_SECOND = itemgetter(1)


class _Unsent(ConnectionError):
    """A part that could not be queued: nothing of it went out, so it may be resent."""


class _ReplicaRedis(Redis):
    """A node client whose connections say ``READONLY`` first (reads from a replica)."""

    def _open(self, *args, **kwargs):
        conn = super()._open(*args, **kwargs)
        try:
            reply = conn.call(_READONLY, self.params.connect_timeout)
        except BaseException:
            conn.close()
            raise
        if isinstance(reply, ReplyError):
            conn.close()
            raise ConnectionError(f"READONLY on {self.params.address} failed: {reply}")
        return conn


class _Gather:
    """Wakes the batch's caller once every part has all its replies (or failed)."""

    __slots__ = ("left", "waiter")

    def __init__(self, parts, waiter):
        self.left = parts
        self.waiter = waiter

    def part_done(self):
        self.left -= 1
        if self.left == 0:
            self.waiter.switch(None)


def _part_done(gather, positions, results, asking):
    """The callback of one node's part: puts each reply at its caller's position, and the
    error that ended the connection at those that got none."""

    def done(replies, error):
        if asking:  # every command went out after an ASKING: its reply, unless ASKING was refused
            replies = [a if isinstance(a, ReplyError) else r for a, r in zip(replies[::2], replies[1::2])]
        for i, reply in zip(positions, replies):
            results[i] = reply
        if error is not None:
            for i in positions[len(replies) :]:
                results[i] = type(error)(*error.args)
        gather.part_done()

    return done


class Cluster:
    """A Redis Cluster client for gevent: one pipelined connection per primary, shared by
    every greenlet.

    ``Cluster(startup_nodes, username=, password=, read_from_replicas=False, timeout=,
    connect_timeout=, retry_for=10.0, **Redis options)`` where ``startup_nodes`` is a
    list of ``(host, port)`` (or ``"host:port"``): any reachable nodes; or
    ``Cluster.from_url("redis+cluster://:pw@host:port,host:port")``. The interface is
    ``Redis``'s: ``cmd`` (one command or a batch), ``transaction``, ``dedicated(key)``,
    ``close``; ``cmd(..., node=)`` sends a command to ``"all"`` nodes, ``"primaries"``,
    ``"replicas"``, a ``"random"`` primary or one ``(host, port)``.

    Counters of redirects and retries are in ``stats`` (``moved``, ``ask``, ``tryagain``,
    ``clusterdown``, ``unsent_retries``, ``refreshes``).
    """

    def __init__(
        self,
        startup_nodes=None,
        *,
        read_from_replicas=False,
        retry_for=10.0,
        max_blocking=64,
        params=None,
        **options,
    ):
        nodes = _addresses(startup_nodes)
        if params is None:
            if "host" in options or "port" in options:
                nodes.append((options.pop("host", "127.0.0.1"), int(options.pop("port", 6379))))
            for name in ("db", "unix_socket_path"):
                if options.get(name):
                    raise ValueError(f"a Redis Cluster does not take {name}={options[name]!r}")
            for alias, name in (("socket_timeout", "timeout"), ("socket_connect_timeout", "connect_timeout")):
                if alias in options:
                    options[name] = options.pop(alias)
            params = ConnectionParams(**options)
        elif options:
            raise TypeError("pass either params or keyword options, not both")
        if not nodes:
            raise ValueError("a Cluster needs at least one startup node: [(host, port), ...]")
        if params.db != 0:
            raise ValueError(f"a Redis Cluster has only db 0, not db {params.db}")
        if not retry_for >= 0:
            raise ValueError(f"retry_for must be a number of seconds >= 0, not {retry_for!r}")
        self.params = params
        self.startup_nodes = nodes
        self.timeout = params.timeout
        self.read_from_replicas = read_from_replicas
        self.retry_for = retry_for
        self.max_blocking = max_blocking
        self.closed = False
        self.stats = dict.fromkeys(_COUNTERS, 0)
        self._map = None  # SlotMap once loaded
        self._table = None  # CommandTable once loaded
        self._refreshing = None  # AsyncResult of the refresh under way
        self._clients = {}  # (host, port) -> Redis
        self._readers = {}  # (host, port) -> _ReplicaRedis
        self._plain = {}  # command name as spelled -> (key index or 0, KeyRule): see _remember
        self._simple = {}  # command name as spelled -> its one key is first: see _first_key_name
        _clusters.add(self)

    @classmethod
    def from_url(cls, url, read_from_replicas=False, retry_for=10.0, max_blocking=64, **options):
        """``redis+cluster://[[user]:password@]host:port[,host:port...][?options]``
        (``rediss+cluster://`` for TLS); keyword options override the URL's."""
        nodes, params = parse_cluster_url(url, **options)
        return cls(
            nodes,
            params=params,
            read_from_replicas=read_from_replicas,
            retry_for=retry_for,
            max_blocking=max_blocking,
        )

    def __repr__(self):
        known = len(self._map.primaries()) if self._map is not None else "?"
        return f"<Cluster {','.join(f'{h}:{p}' for h, p in self.startup_nodes[:3])} primaries={known}>"

    # -- node clients ------------------------------------------------------

    def node_client(self, address):
        """The ``Redis`` for the node at ``(host, port)`` (made on first use): its shared
        connection is the one this cluster client pipelines on."""
        client = self._clients.get(address)
        if client is None:
            if self.closed:
                raise ConnectionError("cluster client is closed")
            client = self._clients[address] = Redis(
                params=self.params.replace(host=address[0], port=address[1]), max_blocking=self.max_blocking
            )
        return client

    def _reader_client(self, address):
        client = self._readers.get(address)
        if client is None:
            if self.closed:
                raise ConnectionError("cluster client is closed")
            client = self._readers[address] = _ReplicaRedis(
                params=self.params.replace(host=address[0], port=address[1]), max_blocking=self.max_blocking
            )
        return client

    def client_for_slot(self, slot, timeout=None):
        """The ``Redis`` of the primary that owns ``slot`` now."""
        return self.node_client(self._owner(slot, _deadline(timeout)))

    def client_for_key(self, key, timeout=None):
        """The ``Redis`` of the primary that owns ``key``'s slot now."""
        return self.client_for_slot(key_slot(key), timeout)

    def slot_map(self, timeout=None):
        """The current ``SlotMap`` (loaded on first use)."""
        return self._loaded(_deadline(timeout))

    # -- the slot map ------------------------------------------------------

    def _loaded(self, deadline):
        smap = self._map
        if smap is not None:
            return smap
        outcome = self._wait_refresh(deadline)
        if isinstance(outcome, BaseException):
            raise type(outcome)(*outcome.args)
        return outcome

    def _owner(self, slot, deadline):
        owner = self._loaded(deadline).owners[slot]
        if owner is None:
            self._refresh_soon()
            raise ReplyError(f"CLUSTERDOWN Hash slot {slot} not served (by this client's last slot map)")
        return owner

    def _refresh_soon(self):
        """Start a refresh unless one is under way; its AsyncResult."""
        attempt = self._refreshing
        if attempt is None:
            attempt = self._refreshing = AsyncResult()
            gevent.spawn(self._refresh, attempt)
        return attempt

    def _wait_refresh(self, deadline):
        attempt = self._refresh_soon()
        left = None if deadline is None else max(0.0, deadline - monotonic())
        try:
            return attempt.get(timeout=left)
        except Timeout:
            raise TimeoutError(
                f"the cluster's slot map did not load within the {left:.3g}s left of the call's timeout"
            ) from None

    def _refresh(self, attempt):
        outcome = ConnectionError("refreshing the slot map was interrupted")
        try:
            outcome = self._fetch_map()
            self._map = outcome
            self.stats["refreshes"] += 1
        except Exception as e:
            outcome = e
        finally:
            if self._refreshing is attempt:
                self._refreshing = None
            attempt.set(outcome)

    def _fetch_map(self):
        """Ask known primaries, then the startup nodes, then anyone else known, for the
        slot map; the first complete one wins (else the first one got)."""
        candidates = []
        if self._map is not None:
            primaries = self._map.primaries()
            random.shuffle(primaries)
            candidates += primaries
        candidates += self.startup_nodes
        if self._map is not None:
            candidates += self._map.nodes()
        errors = []
        partial = None
        for address in dict.fromkeys(candidates):
            if self.closed:
                raise ConnectionError("cluster client is closed")
            client = self.node_client(address)
            try:
                smap = self._ask_map(client, address)
                if self._table is None:
                    self._table = self._ask_table(client)
            except AuthenticationError:
                raise
            except NoPermissionError as e:
                raise NoPermissionError(
                    f"{e} (the cluster client needs CLUSTER SHARDS or SLOTS, and COMMAND, on "
                    f"{client.params.address}: grant them to the ACL user)"
                ) from None
            except RedisError as e:
                if "cluster support disabled" in str(e):
                    raise ConnectionError(
                        f"{client.params.address} is not a cluster node (cluster support disabled): "
                        "use greenredis.Redis for a single server"
                    ) from None
                errors.append(f"{client.params.address}: {e}")
                continue
            if not smap.uncovered():
                return smap
            partial = partial or smap
        if partial is not None:
            return partial
        shown = "; ".join(errors[:5]) + (f"; and {len(errors) - 5} more" if len(errors) > 5 else "")
        raise ConnectionError(f"no cluster node answered with a slot map ({redact_text(shown)})")

    def _ask_map(self, client, address):
        timeout = self.params.connect_timeout
        reply = client.cmd([["CLUSTER", "SHARDS"]], timeout=timeout)[0]
        if isinstance(reply, ReplyError):
            if "unknown subcommand" not in str(reply).lower() and "unknown command" not in str(reply).lower():
                raise reply
            return SlotMap.from_slots(client.cmd(["CLUSTER", "SLOTS"], timeout=timeout), address)
        return SlotMap.from_shards(reply, address)

    def _ask_table(self, client):
        return CommandTable.from_command_reply(client.cmd(["COMMAND"], timeout=self.params.connect_timeout))

    def _moved(self, error, address):
        """A ``MOVED`` to ``address``: point the slot at its new owner now and refresh the
        rest of the map in the background, once however many callers saw it."""
        self.stats["moved"] += 1
        smap = self._map
        if smap is not None and smap.moved(error.slot, address):
            self._refresh_soon()

    # -- routing -----------------------------------------------------------

    def _rule(self, deadline):
        table = self._table
        if table is None:
            self._loaded(deadline)
            table = self._table
        return table

    def _remember(self, first, index, rule):
        """Remember the rule of a command name as spelled, if that name is neither
        blocking nor refused on a shared connection (``_route`` would say nothing)."""
        name = first.upper() if first.__class__ is str or first.__class__ is bytes else None
        if name is not None and name not in _SPECIAL and len(self._plain) < 4096:
            self._plain[first] = (index, rule)

    def _slot(self, command, rule, deadline):
        """The slot of ``command``'s keys (None: keyless); CROSSSLOT raised before sending."""
        if rule.kind == "one":
            if len(command) > rule.index:
                return key_slot(command[rule.index])
            return None
        keys = rule.keys(command)
        if keys is None:
            keys = self._getkeys(command, deadline)
        return slot_of_keys(keys)

    def _getkeys(self, command, deadline):
        """``COMMAND GETKEYS`` for a command whose keys only the server can find."""
        client = self.node_client(self._random_primary(deadline))
        left = None if deadline is None else max(0.001, deadline - monotonic())
        reply = client.cmd([["COMMAND", "GETKEYS", *command]], timeout=left)[0]
        if isinstance(reply, ReplyError):
            return []  # keyless, or not a command: the node that gets it will say what is wrong
        return reply

    def _random_primary(self, deadline):
        primaries = self._loaded(deadline).primaries()
        if not primaries:
            self._refresh_soon()
            raise ConnectionError("the cluster has no primary serving slots (by the last slot map)")
        return random.choice(primaries)

    def _target(self, slot, readonly, deadline):
        """Where a command for ``slot`` goes: ``(address, reader)``."""
        if slot is None:
            return self._random_primary(deadline), False
        if readonly and self.read_from_replicas:
            smap = self._loaded(deadline)
            reader = smap.reader(slot)
            if reader is not None and reader != smap.owners[slot]:
                return reader, True
        return self._owner(slot, deadline), False

    def _client(self, address, reader):
        return self._reader_client(address) if reader else self.node_client(address)

    # -- commands ----------------------------------------------------------

    def cmd(self, command, timeout=_DEFAULT, node=None):
        """Run one command, routed by its keys' slot, and return its reply (raising
        ``ReplyError``); or run a batch (a list of commands) split per node and return
        the replies in order, errors in place (a ``ConnectionError`` instance for a
        command whose node failed with it in flight). ``node=``: see the class."""
        if timeout is _DEFAULT:
            timeout = self.timeout
        first = _first(command)
        if first is _EMPTY:
            return []
        if first.__class__ is list or first.__class__ is tuple:
            if node is not None:
                raise ValueError("node= takes one command, not a batch")
            return self._batch(command, timeout)
        if node is not None:
            return self._on_nodes(command, node, timeout)
        deadline = _deadline(timeout)
        packed = pack(command)
        blocks = _route(first, command, shared=True)
        rule = self._rule(deadline).rule(first).sub(command)
        slot = self._slot(command, rule, deadline)
        reply = self._send_one(packed, slot, rule.readonly, blocks, deadline, timeout)
        if isinstance(reply, ReplyError):
            raise reply
        return reply

    def _send_one(self, packed, slot, readonly, blocks, deadline, timeout):
        address = reader = None
        asking = False
        hops = 0
        backoff = None
        retry_until = deadline if deadline is not None else monotonic() + self.retry_for
        while True:
            if address is None:
                try:
                    address, reader = self._target(slot, readonly, deadline)
                except ReplyError as e:  # a slot nobody serves, by our map: wait for a new one
                    self.stats["clusterdown"] += 1
                    backoff = backoff or Backoff(0.05, 1.0)
                    if not self._pause(backoff, retry_until, refresh=True):
                        raise type(e)(*e.args) from None
                    continue
            client = self._client(address, reader)
            left = None if deadline is None else max(0.001, deadline - monotonic())
            try:
                if blocks:
                    reply = client._blocking_call(packed, left)
                else:
                    try:
                        conn, left = client._shared_conn(left)
                    except ConnectionError as e:
                        if isinstance(e, AuthenticationError) or self.closed:
                            raise
                        # nothing was sent: wait for a new map (a failover), then try again
                        backoff = backoff or Backoff(0.05, 1.0)
                        if not self._pause(backoff, retry_until, refresh=True):
                            raise
                        self.stats["unsent_retries"] += 1
                        readonly = readonly and not reader  # an unreachable replica: its primary
                        address = None
                        continue
                    if asking:
                        asked, reply = conn.call_many([_ASKING, packed], left)
                        if isinstance(asked, ReplyError):
                            reply = asked  # ASKING refused (an ACL): that, not the ASK it meets again
                    else:
                        reply = conn.call(packed, left)
            except ConnectionError:
                self._refresh_soon()  # in flight: the caller hears of it, the next call finds the new map
                raise
            except TimeoutError:  # said with the caller's timeout, not what was left of it
                if timeout is None:
                    raise
                raise TimeoutError(f"no reply from {client.params.address} within {timeout}s") from None
            if not isinstance(reply, ReplyError):
                return reply
            cls = reply.__class__
            if cls is MovedError or cls is AskError:
                hops += 1
                if hops > MAX_REDIRECTS:
                    return reply
                if cls is MovedError:
                    self._moved(reply, _redirect(reply, client))
                    asking = False
                else:
                    self.stats["ask"] += 1
                    asking = True
                address, reader = _redirect(reply, client), False
                if blocks and asking:  # a blocking command cannot be paired with ASKING here
                    backoff = backoff or Backoff(0.05, 1.0)
                    if not self._pause(backoff, retry_until):
                        return reply
                    asking = False
                continue
            prefix = reply.prefix
            if prefix in _RETRY_PREFIXES:
                self.stats[prefix.lower()] += 1
                backoff = backoff or Backoff(0.05, 1.0)
                if not self._pause(backoff, retry_until, refresh=prefix == "CLUSTERDOWN"):
                    return reply
                address = None
                asking = False
                continue
            return reply

    def _pause(self, backoff, until, refresh=False):
        """Sleep the next backoff delay if that ends before ``until``; False if not."""
        wait = backoff.failure()
        if monotonic() + wait > until:
            return False
        if refresh:
            self._refresh_soon()
        gevent.sleep(wait)
        return True

    def _batch(self, commands, timeout):
        deadline = _deadline(timeout)
        self._rule(deadline)
        smap = self._loaded(deadline)
        packed = pack_many(commands)  # raises, saying what is wrong, before anything is sent
        n = len(packed)
        results = [None] * n
        groups = {}  # (address, reader, asking) -> positions, ascending
        slots = {}  # position -> slot, for those planned one by one
        failed = []  # positions refused before sending (CROSSSLOT, CLUSTERDOWN)
        rest = self._split_first_keys(commands, smap, groups)
        if rest:
            self._plan_each(commands, rest, smap, groups, results, slots, failed, deadline)
        rule_of = self._table.rule
        again = [i for i in failed if results[i].prefix == "CLUSTERDOWN"]
        retry_until = deadline if deadline is not None else monotonic() + self.retry_for
        backoff = None
        hops = 0
        unsent = False
        while True:
            if groups:
                self._send_parts(groups, packed, results, deadline, timeout)
            wait = refresh = bool(again)
            retry = {}  # position -> (address or None: look it up again, asking)
            for i in again:
                retry[i] = (None, False)
            if any(issubclass(kind, RedisError) for kind in set(map(type, results))):
                todo = [i for positions in groups.values() for i in positions]
            else:
                todo = ()  # no error anywhere (the common case): no reply looked at one by one
            sent_to = None  # position -> the node it went to, made if a redirect needs it
            for i in todo:
                reply = results[i]
                if not isinstance(reply, RedisError):
                    continue
                cls = reply.__class__
                if cls is MovedError or cls is AskError:
                    address = reply.address
                    if not address[0]:  # "MOVED 12 :7001": the host of the node that said it
                        if sent_to is None:
                            sent_to = {j: t[0] for t, ps in groups.items() for j in ps}
                        address = (sent_to[i][0], address[1])
                    if cls is MovedError:
                        self._moved(reply, address)
                        retry[i] = (address, False)
                    else:
                        self.stats["ask"] += 1
                        retry[i] = (address, True)
                elif cls is _Unsent:
                    unsent = True
                    self.stats["unsent_retries"] += 1
                    wait = refresh = True
                    retry[i] = (None, None)  # None: to the primary, even for a read
                elif isinstance(reply, ReplyError) and reply.prefix in _RETRY_PREFIXES:
                    self.stats[reply.prefix.lower()] += 1
                    wait = True
                    refresh = refresh or reply.prefix == "CLUSTERDOWN"
                    retry[i] = (None, False)
            hops += 1
            if not retry or hops > MAX_REDIRECTS:
                break
            if wait:
                backoff = backoff or Backoff(0.05, 1.0)
                if not self._pause(backoff, retry_until, refresh=refresh):
                    break
            groups = {}
            again = []
            for i in sorted(retry):
                address, asking = retry[i]
                if address is None:
                    command = commands[i]
                    rule = rule_of(command[0]).sub(command)
                    readonly = asking is not None and rule.readonly
                    asking = False
                    slot = slots[i] if i in slots else self._slot(command, rule, deadline)
                    try:
                        address, reader = self._target(slot, readonly, deadline)
                    except ReplyError as e:
                        results[i] = e
                        again.append(i)
                        continue
                    target = (address, reader, False)
                else:
                    target = (address, False, asking)
                groups.setdefault(target, []).append(i)
        if unsent:
            for i, reply in enumerate(results):
                if reply.__class__ is _Unsent:
                    results[i] = ConnectionError(*reply.args)
        return results

    def _split_first_keys(self, commands, smap, groups):
        """Group the commands whose one key is their first argument (GET, SET, INCR...:
        the common case) by the primary that owns it, in C-level passes over the batch
        (``slots.split_keys``); return the positions of the others, to plan one by one."""
        n = len(commands)
        firsts = list(map(_FIRST, commands))
        try:
            names = set(firsts)
        except TypeError:  # a bytearray name: one by one
            return range(n)
        simple = self._simple
        chosen = []
        for name in names:
            known = simple.get(name)
            if known is None:
                known = self._first_key_name(name)
            if known:
                chosen.append(name)
        if not chosen:
            return range(n)
        if len(chosen) == len(names):
            positions = None
            rest = []
            picked = commands
        else:
            mask = list(map(frozenset(chosen).__contains__, firsts))
            positions = list(compress(range(n), mask))
            rest = list(compress(range(n), map(not_, mask)))
            picked = list(compress(commands, mask))
        try:
            keys = list(map(_SECOND, picked))
        except IndexError:  # a GET without its key: one by one (the server says what is wrong)
            return range(n)
        route = smap.route()
        for address, part in zip(route.nodes, split_keys(keys, route)):
            if not part:
                continue
            if positions is not None:
                part = list(map(positions.__getitem__, part))
            if address is None:  # slots nobody serves, by this map: one by one (CLUSTERDOWN)
                rest = sorted(rest + part)
            else:
                groups[(address, False, False)] = part
        return rest

    def _first_key_name(self, name):
        """True if commands named ``name`` (as spelled) have their one key first, may run in
        a batch on the shared connection, and go to the slot's primary; remembered."""
        plain = False
        if name.__class__ is str or name.__class__ is bytes:
            if name.upper() not in _SPECIAL:
                rule = self._table.rule(name)
                to_primary = not (self.read_from_replicas and rule.readonly)
                plain = rule.kind == "one" and rule.index == 1 and to_primary
        if len(self._simple) < 4096:
            self._simple[name] = plain
        return plain

    def _plan_each(self, commands, positions, smap, groups, results, slots, failed, deadline):
        """Route the commands at ``positions`` one at a time (keyless, multi-key, by
        subcommand, reads from replicas...) into ``groups``; errors found before sending
        (CROSSSLOT, a slot nobody serves) go in place and their positions in ``failed``."""
        owners = smap.owners
        replicas_ok = self.read_from_replicas
        rule_of = self._table.rule
        plain = self._plain
        more = {}
        for i in positions:
            command = commands[i]
            first = command[0]
            try:
                index, rule = plain[first]
            except (KeyError, TypeError):
                if _route(first, command, shared=True):
                    raise ValueError(
                        f"{first} blocks: run it alone with cmd([...]), not in a batch"
                    ) from None
                rule = rule_of(first)
                index = rule.index if rule.kind == "one" else 0
                self._remember(first, index, rule)
            if index and len(command) > index:
                slot = key_slot(command[index])
            else:
                rule = rule.sub(command)
                try:
                    slot = self._slot(command, rule, deadline)
                except ReplyError as e:  # CROSSSLOT: in place, never sent
                    results[i] = e
                    failed.append(i)
                    continue
            slots[i] = slot
            owner = owners[slot] if slot is not None else None
            reader = False
            if owner is None or (replicas_ok and rule.readonly):
                try:
                    owner, reader = self._target(slot, rule.readonly, deadline)
                except ReplyError as e:  # CLUSTERDOWN: a slot nobody serves, retried
                    results[i] = e
                    failed.append(i)
                    continue
            part = more.get((owner, reader, False))
            if part is None:
                more[(owner, reader, False)] = [i]
            else:
                part.append(i)
        for target, part in more.items():
            known = groups.get(target)
            groups[target] = part if known is None else sorted(known + part)

    def _send_parts(self, groups, packed, results, deadline, timeout):
        """Queue every node's part (one write each), then wait for all their replies."""
        waiter = Waiter(get_hub())
        gather = _Gather(len(groups), waiter)
        timer = None
        if deadline is not None:
            timer = Timeout._start_new_or_dummy(
                max(0.001, deadline - monotonic()),
                TimeoutError(f"no reply from the cluster within {timeout}s"),
            )
        try:
            for (address, reader, asking), positions in groups.items():
                done = _part_done(gather, positions, results, asking)
                client = self._client(address, reader)
                try:
                    left = None if deadline is None else max(0.001, deadline - monotonic())
                    conn, _ = client._shared_conn(left)
                    if asking:
                        chunks = []
                        for i in positions:
                            chunks.append(_ASKING)
                            chunks.append(packed[i])
                    else:
                        chunks = list(map(packed.__getitem__, positions))
                    conn.submit_many(chunks, done)
                except ConnectionError as e:
                    if isinstance(e, AuthenticationError) or self.closed:
                        done([], e)
                    else:  # nothing of this part went out: it may be resent
                        done([], _Unsent(str(e)))
            waiter.get()
        finally:
            if timer is not None:
                timer.close()

    def _on_nodes(self, command, node, timeout):
        deadline = _deadline(timeout)
        smap = self._loaded(deadline)
        if node == "random":
            return self.node_client(self._random_primary(deadline)).cmd(command, timeout=timeout)
        if isinstance(node, tuple) or (isinstance(node, str) and ":" in node):
            (address,) = _addresses([node])
            return self._client(address, address not in smap.replicas).cmd(command, timeout=timeout)
        primaries = smap.primaries()
        replicas = [r for p in primaries for r in smap.replicas.get(p, ())]
        if node == "primaries":
            targets = [(a, False) for a in primaries]
        elif node == "replicas":
            targets = [(a, True) for a in replicas]
        elif node == "all":
            targets = [(a, False) for a in primaries] + [(a, True) for a in replicas]
        else:
            raise ValueError(f"node= is 'all', 'primaries', 'replicas', 'random' or (host, port): {node!r}")
        results = {}
        jobs = [(a, gevent.spawn(self._client(a, r).cmd, [command], timeout)) for a, r in targets]
        for address, job in jobs:
            try:
                results[address] = job.get()[0]
            except RedisError as e:
                results[address] = e
        return results

    def transaction(self, commands, timeout=_DEFAULT):
        """MULTI/EXEC on the node that owns the commands' one slot (CROSSSLOT before
        sending otherwise); returns EXEC's replies, errors in place. A transaction that
        met MOVED was discarded by Redis and is resent to the new owner."""
        if timeout is _DEFAULT:
            timeout = self.timeout
        first = _first(commands)
        if first.__class__ not in (list, tuple):
            raise ValueError("transaction() takes a list of commands")
        deadline = _deadline(timeout)
        table = self._rule(deadline)
        packed = [pack(c) for c in commands]
        found = set()
        for command in commands:
            _route(command[0], command, shared=True)
            slot = self._slot(command, table.rule(command[0]), deadline)
            if slot is not None:
                found.add(slot)
        if len(found) > 1:
            raise crossslot(found, "Keys in the transaction")
        slot = found.pop() if found else None
        address = self._target(slot, False, deadline)[0]
        retry_until = deadline if deadline is not None else monotonic() + self.retry_for
        backoff = Backoff(0.05, 1.0)
        hops = 0
        while True:
            client = self.node_client(address)
            left = None if deadline is None else max(0.001, deadline - monotonic())
            try:
                conn, left = client._shared_conn(left)
            except ConnectionError as e:
                if isinstance(e, AuthenticationError) or not self._pause(backoff, retry_until, refresh=True):
                    raise
                self.stats["unsent_retries"] += 1
                address = self._target(slot, False, deadline)[0]
                continue
            try:
                replies = conn.call_many([_MULTI, *packed, _EXEC], left)
            except ConnectionError:
                self._refresh_soon()
                raise
            result = replies[-1]
            queued = replies[1:-1]
            early = [replies[0], *queued]
            redirect = next((r for r in early if isinstance(r, (MovedError, AskError))), None)
            retry = next(
                (r for r in early if isinstance(r, ReplyError) and r.prefix in _RETRY_PREFIXES), None
            )
            if isinstance(result, ReplyError) and (redirect is not None or retry is not None):
                hops += 1
                if isinstance(redirect, MovedError) and hops <= MAX_REDIRECTS:
                    address = _redirect(redirect, client)
                    self._moved(redirect, address)
                    continue
                # ASK (mid-migration), TRYAGAIN, CLUSTERDOWN: wait for the slot to settle
                why = redirect if redirect is not None else retry
                if isinstance(why, AskError):
                    self.stats["ask"] += 1
                elif why.prefix in _RETRY_PREFIXES:
                    self.stats[why.prefix.lower()] += 1
                if hops <= MAX_REDIRECTS and self._pause(backoff, retry_until, refresh=True):
                    address = self._target(slot, False, deadline)[0]
                    continue
                raise type(why)(f"{why} (the transaction was discarded; nothing was written)")
            if isinstance(result, ReplyError):
                errors = [f"command {i}: {r}" for i, r in enumerate(queued) if isinstance(r, ReplyError)]
                raise type(result)(f"{result} ({'; '.join(errors)})" if errors else str(result))
            if result is None:
                raise WatchError("EXEC aborted: a WATCHed key changed; nothing was written")
            return result

    def dedicated(self, key, timeout=None):
        """A connection of its own to the primary that owns ``key``'s slot, for
        WATCH/MULTI/EXEC: ``with c.dedicated("user:1") as d: d.cmd(["WATCH", "user:1"])``.
        Commands on it go to that node as they are (a moved slot answers MOVED)."""
        return self.client_for_key(key, timeout).dedicated()

    def ssubscribe(self, *channels, maxsize=10000, check_every=5.0):
        """A ``ShardedSubscription`` to sharded channels (SSUBSCRIBE), one connection per
        primary owning one; it follows slot moves (``greenredis.client.cluster_pubsub``)."""
        from greenredis.client.cluster_pubsub import ShardedSubscription

        return ShardedSubscription(self, channels=channels, maxsize=maxsize, check_every=check_every)

    def subscribe(self, *channels, maxsize=10000, check_every=5.0):
        """A ``ClusterSubscription`` to classic channels, on one node (every node hears
        every PUBLISH), moving to another when that one cannot be reached."""
        from greenredis.client.cluster_pubsub import ClusterSubscription

        return ClusterSubscription(self, channels=channels, maxsize=maxsize, check_every=check_every)

    def psubscribe(self, *patterns, maxsize=10000, check_every=5.0):
        """A ``ClusterSubscription`` to glob-style patterns of classic channels."""
        from greenredis.client.cluster_pubsub import ClusterSubscription

        return ClusterSubscription(self, patterns=patterns, maxsize=maxsize, check_every=check_every)

    def close(self):
        """Close every node's connections; callers still waiting get ConnectionError."""
        self.closed = True
        for client in [*self._clients.values(), *self._readers.values()]:
            client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _redirect(error, client):
    """Where a MOVED/ASK points; an empty host (``MOVED 12 :7001``) is that of the node
    that said it."""
    host, port = error.address
    return (host or client.params.host, port)


def _deadline(timeout):
    return None if timeout is None else monotonic() + timeout


def _addresses(nodes):
    """Startup nodes as ``[(host, port)]`` from tuples or ``"host:port"`` strings."""
    if nodes is None:
        return []
    if isinstance(nodes, (str, tuple)):
        nodes = [nodes]
    found = []
    for node in nodes:
        if isinstance(node, str):
            host, sep, port = node.rpartition(":")
            if not sep or not port.isdigit():
                raise ValueError(f"a startup node is (host, port) or 'host:port', not {node!r}")
            node = (host.strip("[]"), int(port))
        if not (isinstance(node, (tuple, list)) and len(node) == 2 and isinstance(node[1], int)):
            raise ValueError(f"a startup node is (host, port) or 'host:port', not {node!r}")
        if not 0 < node[1] < 65536:
            raise ValueError(f"bad port in startup node {node!r}")
        found.append((str(node[0]), int(node[1])))
    return found


_clusters: weakref.WeakSet[Cluster] = weakref.WeakSet()  # for the fork hook


def _after_fork_in_child():
    # A refresh under way in the parent never ends in the child: forget it (the node
    # clients forget their connections themselves).
    for cluster in list(_clusters):
        cluster._refreshing = None


os.register_at_fork(after_in_child=_after_fork_in_child)
