"""The pipelined client: one connection shared by every greenlet.

``connection`` is the pipeline itself (one socket driven from gevent's loop, hiredis as
its pure parsing half), ``redis`` the user-facing ``Redis``, ``pubsub`` subscriptions, ``cluster`` the
``Cluster`` client (``slots`` its pure half: key slots, slot map, key positions).
"""

from greenredis.client.cluster import Cluster
from greenredis.client.pubsub import Message, Monitor, Subscription
from greenredis.client.redis import Dedicated, Redis

__all__ = ["Redis", "Cluster", "Dedicated", "Subscription", "Monitor", "Message"]
