"""The Tempo dashboard as a WSGI app, for the Procfile: ``greenredis web --app app:app``.

Serve it with a gevent server that speaks websockets (``greenredis web`` does);
configuration comes from the environment (``REDIS_URL``, ``TEMPO_PASSWORD``, ...).
"""

from greenredis.tempo import create_app

app = create_app()
