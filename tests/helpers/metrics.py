"""/metrics as the tests read it: one scrape of a node's Prometheus text, parsed into samples."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.opsload import http_get


async def scrape(port: int, headers: str = "") -> dict:
    """{(sample name, sorted labels): value} from one scrape, checked to parse as Prometheus text."""
    status, head, body = await http_get(port, "/metrics", headers)
    assert status == 200, body
    assert head["content-type"].startswith("text/plain; version=0.0.4")
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body.decode()) for s in family.samples}
