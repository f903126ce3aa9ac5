"""Tempo: the live dashboard. A Flask app (``create_app``) that draws real-time
graphs and logs of the instances in the grid, over one websocket per page fed
from Redis pub/sub. See ``app`` for configuration, ``hub`` for the wire format.
"""

from greenredis.tempo.app import create_app
from greenredis.tempo.hub import Hub

__all__ = ["create_app", "Hub"]
