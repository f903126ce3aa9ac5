"""The grids fixture: started Grid nodes, stopped after the test."""

import pytest

from greenredis.grid.node import Grid


@pytest.fixture
def grids(request):
    """``grids(url, **kw)`` starts a Grid (interval 0.5 s; ttl the module's ``GRID_TTL``
    or 30 s) and stops it after the test."""
    made = []
    ttl = getattr(request.module, "GRID_TTL", 30)

    def make(url, **kw):
        kw.setdefault("ttl", ttl)
        kw.setdefault("interval", 0.5)
        g = Grid(url, **kw)
        made.append(g)
        return g.start()

    yield make
    for g in made:
        g.stop(timeout=1)
