import pytest

from greenredis.backoff import Backoff, delay

pytestmark = pytest.mark.unit


def test_delay_doubles_from_first_up_to_most():
    mid = lambda: 0.5  # the middle of the jitter range: no jitter
    assert [delay(n, 0.05, 2.0, rand=mid) for n in range(0, 9)] == [
        0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0,
    ]  # fmt: skip
    assert delay(10_000, 0.05, 2.0, rand=mid) == 2.0  # no overflow however many failures


def test_jitter_spreads_the_delay_around_the_base():
    assert delay(3, 0.1, 5.0, jitter=0.2, rand=lambda: 0.0) == pytest.approx(0.4 * 0.8)
    assert delay(3, 0.1, 5.0, jitter=0.2, rand=lambda: 0.999999) == pytest.approx(0.4 * 1.2, rel=1e-5)
    spread = {round(delay(5, 0.05, 2.0), 6) for _ in range(200)}
    assert len(spread) > 100 and min(spread) >= 0.8 * 0.8 and max(spread) < 0.8 * 1.2


def test_backoff_counts_failures_until_reset():
    b = Backoff(0.1, 1.0, jitter=0.0)
    assert [b.failure() for _ in range(5)] == [0.1, 0.2, 0.4, 0.8, 1.0]
    b.reset()
    assert b.failures == 0 and b.failure() == 0.1
