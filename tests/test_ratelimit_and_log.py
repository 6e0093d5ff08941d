"""Pure logic: the per-user request budget and the access log's scrubbing."""

from pvhpc.web.ratelimit import RateLimiter
from pvhpc.web.accesslog import scrub


def test_bucket_allows_a_burst_then_refills():
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])
    assert all(limiter.allow("a") for _ in range(60))
    assert not limiter.allow("a") and limiter.allow("b")
    assert 0.9 < limiter.retry_after("a") <= 1.0
    now[0] += 1.0
    assert limiter.allow("a") and not limiter.allow("a")


def test_scrub_hides_ids_and_query_strings():
    sid = "CPr8wTmYmjDVfR3TbXig-f2TN2oR01hZ"
    assert scrub(f"/api/v1/sessions/{sid}/report") == "/api/v1/sessions/CPr8…/report"
    assert scrub(f"/proxy?sessionId={sid}&path=ws") == "/proxy"
    assert scrub("/api/v1/sessions") == "/api/v1/sessions"
