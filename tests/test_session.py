"""The session record's rate and quota windows."""

from __future__ import annotations

from router.session import QuotaWindow, RateWindow


def test_rate_window_allows_limit_per_duration():
    w = RateWindow(3, 1.0)
    assert [w.hit(10.0), w.hit(10.1), w.hit(10.2)] == [0, 0, 0]
    wait = w.hit(10.5)
    assert abs(wait - 0.5) < 1e-9
    assert w.hit(11.0) == 0  # the next window
    assert w.to_map(11.0)["remaining"] == 2


def test_quota_window_renews():
    q = QuotaWindow(2, 60.0, now=0.0)
    assert q.spend(1.0) == 0 and q.spend(2.0) == 0
    assert q.spend(3.0) == 57.0
    assert q.remaining == 0
    assert q.spend(61.0) == 0  # renewed at 60
    assert q.remaining == 1 and q.renews == 120.0
    assert q.spend(500.0) == 0  # several periods later: renewed once, due at the next boundary
    assert q.renews == 540.0
