"""The status page in a real browser (issue 14): headless Chromium opens `/` after a known load, and the
numbers its JavaScript rendered from /status.json (read from the DOM) are the load's; then it opens the
page again while calls and publications keep coming, and takes a screenshot of it.

Chromium is required, not optional: .ci/run installs Debian's `chromium`. Set COURTYARD_SCREENSHOT=PATH
to keep the screenshot (docs/status.png is made so)."""

from __future__ import annotations

import os
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest_twisted
from autobahn.wamp.types import PublishOptions
from twisted.internet import task, utils

from tests import opsload
from tests.opsload import run_load

ensure = pytest_twisted.ensureDeferred
CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
MISSING = ("headless Chromium is required for the status page test and was not found: install Debian's "
           "`chromium` package (apt-get install -y chromium; .ci/run does)")


class _Dom(HTMLParser):
    """The rendered page's table rows (data-* attributes and cell texts by class) and elements by id."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[dict]] = {}
        self.ids: dict[str, str] = {}
        self.body: dict[str, str] = {}
        self._table = self._row = self._cell = self._id = None

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if tag == "body":
            self.body = a
        if tag == "table":
            self._table = a.get("id")
        elif tag == "tr" and self._table and "data-realm" in a:
            self._row = {"attrs": a, "cells": {}}
            self.rows.setdefault(self._table, []).append(self._row)
        elif tag == "td" and self._row is not None:
            self._cell = (a.get("class") or "").split()
            self._row["cells"].setdefault("_all", []).append("")
        if "id" in a and tag not in ("table", "tr"):
            self._id = a["id"]
            self.ids[self._id] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = None
        elif tag == "td":
            self._cell = None
        elif tag == "table":
            self._table = None
        if tag in ("div", "span"):
            self._id = None

    def handle_data(self, data: str) -> None:
        if self._row is not None and self._cell is not None:
            self._row["cells"]["_all"][-1] += data
            for name in self._cell:
                self._row["cells"][name] = self._row["cells"].get(name, "") + data
        if self._id is not None:
            self.ids[self._id] += data

    def row(self, table: str, **attrs: str) -> dict:
        found = [r["cells"] for r in self.rows.get(table, [])
                 if all(r["attrs"].get(f"data-{k}") == v for k, v in attrs.items())]
        assert len(found) == 1, (table, attrs, self.rows.get(table))
        return found[0]


async def chromium(url: str, profile: Path, *extra: str, budget: int = 3000) -> str:
    """Run headless Chromium on `url` for `budget` ms of page time (its JavaScript polls once a second
    meanwhile; page time runs ahead of real time while the page waits for nothing); its stdout."""
    assert CHROMIUM, MISSING
    args = ["60", CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
            f"--user-data-dir={profile}", f"--virtual-time-budget={budget}", *extra, url]
    out, err, code = await utils.getProcessOutputAndValue(shutil.which("timeout"), args,
                                                          env={**os.environ, "HOME": str(profile)})
    assert code == 0, (code, err.decode(errors="replace")[-2000:])
    return out.decode()


def number(text: str) -> int:
    return int(text.replace(",", ""))


@ensure
async def test_the_status_page_shows_the_load_in_a_browser(make_node, tmp_path):
    assert CHROMIUM, MISSING
    node = make_node(**opsload.CONFIG)
    clients = await run_load(node.url)
    dom = _Dom()
    dom.feed(await chromium(f"http://127.0.0.1:{node.port}/", tmp_path / "profile", "--dump-dom"))
    assert int(dom.body.get("data-polls", 0)) >= 2, dom.body  # it polled, and kept polling
    assert dom.ids["live"] == "live"
    assert number(dom.ids["k-sessions"]) == opsload.SESSIONS_REALM1 + opsload.SESSIONS_REALM2
    realm1 = dom.row("realms", realm="realm1")
    assert number(realm1["sessions"]) == opsload.SESSIONS_REALM1
    assert number(realm1["calls"]) == opsload.CALLS_ADD + opsload.CALLS_MISSING + opsload.CALLS_HANGING
    assert number(realm1["publications"]) == opsload.PUBLISHES
    assert number(realm1["events"]) == opsload.PUBLISHES * opsload.SUBSCRIBERS
    assert number(realm1["pending"]) == opsload.CALLS_HANGING
    assert number(dom.row("realms", realm="realm2")["sessions"]) == opsload.SESSIONS_REALM2
    assert number(dom.row("procedures", realm="realm1", uri="com.example.add")["count"]) == opsload.CALLS_ADD
    assert number(dom.row("procedures", realm="realm1", uri="com.example.missing")["count"]) == opsload.CALLS_MISSING
    assert number(dom.row("topics", realm="realm1", uri="com.example.news")["count"]) == opsload.PUBLISHES
    assert number(dom.row("topics", realm="realm2", uri="com.other.t")["count"]) == 3
    refusals = {(r["attrs"]["data-realm"], r["attrs"]["data-reason"]): r["cells"]["_all"]
                for r in dom.rows["refusals"]}
    assert set(refusals) == {("realm1", "not_authorized"), ("realm1", "authentication_failed"),
                             ("realm2", "rate_limited")}, refusals
    assert refusals["realm1", "not_authorized"][4] == "CALL com.secret.x"
    assert refusals["realm1", "authentication_failed"][3] == "alice"

    # again while a load runs: the page shows rates; the screenshot is of this
    caller = clients[4]
    ticks = [0]

    def tick() -> None:
        ticks[0] += 1
        caller.call("com.example.add", ticks[0], 1).addErrback(lambda f: None)
        caller.publish("com.example.news", ticks[0], options=PublishOptions(acknowledge=True)).addErrback(
            lambda f: None)

    loop = task.LoopingCall(tick)
    loop.start(0.01)
    shot = tmp_path / "status.png"
    try:
        dom = _Dom()
        dom.feed(await chromium(f"http://127.0.0.1:{node.port}/", tmp_path / "profile", "--dump-dom"))
        await chromium(f"http://127.0.0.1:{node.port}/", tmp_path / "profile", f"--screenshot={shot}",
                       "--window-size=1200,900", budget=12000)
    finally:
        loop.stop()
    done = ticks[0]
    assert done > 0
    shown = number(dom.row("procedures", realm="realm1", uri="com.example.add")["count"])
    assert opsload.CALLS_ADD < shown <= opsload.CALLS_ADD + done
    assert float(dom.ids["k-in-rate"].replace(",", "")) > 0, dom.ids
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    keep = os.environ.get("COURTYARD_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)
    for c in clients:
        c.leave()
