"""``Watch``: what the grid tests assert of every view while a fault runs (no view drops
a live node): the leave events, and every sample of a view lacking one of the nodes."""

import gevent


class Watch:
    """Samples ``views`` every ``every`` seconds until ``stop()``: ``leaves`` holds
    ``(view, node)`` for each leave event, ``short`` ``(view, missing nodes)`` for each
    sample of a view lacking one of ``names`` (the nodes that keep beating)."""

    def __init__(self, views, names, every=0.02):
        self.views, self.names, self.every = views, set(names), every
        self.leaves = []
        self.short = []
        for g in views:
            g.on_leave = lambda name, meta, g=g: self.leaves.append((g.name, name))
        self._greenlet = gevent.spawn(self._sample)

    def _sample(self):
        while True:
            for g in self.views:
                missing = self.names - set(g.nodes())
                if missing:
                    self.short.append((g.name, sorted(missing)))
            gevent.sleep(self.every)

    def stop(self):
        """Stop watching: no more samples, and no more leave events recorded (a leave
        queued before this, such as a stopped node's, would land after it)."""
        self._greenlet.kill()
        for g in self.views:
            g.on_leave = None
