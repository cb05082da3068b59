"""The status page in a real browser (issue 14): headless Chromium opens `/` after a known load, and the
numbers its JavaScript rendered from /status.json (read from the DOM) are the load's; then it opens the
page again while calls and publications keep coming, and takes a screenshot of it.

Chromium is required, not optional: .ci/run installs Debian's `chromium`. Set COURTYARD_SCREENSHOT=PATH
to keep the two-node cluster test's screenshot (docs/status.png is made so)."""

from __future__ import annotations

import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest_twisted
from autobahn.twisted.util import sleep
from autobahn.wamp.types import PublishOptions
from twisted.internet import task, utils

from tests import opsload
from tests.opsload import run_load
from tests.wampclient import connect, with_timeout

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
    for c in clients:
        c.leave()


TOKEN = "status-page-token-0123456789"
ROWS = """JSON.stringify([...document.querySelectorAll('#%s tbody tr')].filter((tr) => !tr.classList.contains('empty'))
  .map((tr) => ({...tr.dataset, cells: [...tr.cells].map((c) => c.textContent)})))"""


async def _rows(browser, table: str) -> list[dict]:
    return json.loads(await browser.evaluate(ROWS % table))


@ensure
async def test_the_status_page_of_a_two_node_cluster_lists_both_and_kills_a_session(make_cluster, tmp_path):
    """Both nodes with their id, version, uptime, sessions and health; the sessions of both; a kill
    through the page (the admin token typed in, the button clicked) says GOODBYE to a session on the
    other node, and without the token it does not."""
    from router import __version__
    from tests.cdp import Browser

    a = await make_cluster("a", http={"token": TOKEN})
    b = await make_cluster("b", http={"token": TOKEN})
    callee = await connect(b.url)
    await callee.register(lambda x, y: x + y, "com.example.add")
    victim = await connect(b.url)
    caller = await connect(a.url)
    listener = await connect(a.url)
    await listener.subscribe(lambda *a: None, "com.example.news")
    for i in range(50):  # b's registration reaches a through Redis
        try:
            await caller.call("com.example.add", i, 1)
            break
        except Exception:
            await sleep(0.05)
    for i in range(20):
        await caller.call("com.example.add", i, 1)
        await caller.publish("com.example.news", i, options=PublishOptions(acknowledge=True))
    ids = {c.welcome.session: n for c, n in ((callee, "b"), (victim, "b"), (caller, "a"), (listener, "a"))}

    browser = await Browser(tmp_path / "chromium").open(f"http://127.0.0.1:{a.port}/")
    try:
        await browser.wait_for("document.querySelectorAll('#nodes tbody tr[data-node]').length === 2 && "
                               "document.querySelectorAll('#sessions tbody tr[data-session]').length === 4")
        nodes = {r["node"]: r["cells"] for r in await _rows(browser, "nodes")}
        assert set(nodes) == {"a", "b"}
        for name, count in (("a", 2), ("b", 2)):
            cells = nodes[name]
            assert cells[0] == name and cells[1] == __version__ and cells[7] == "ok", cells
            assert number(cells[3]) == count and re.match(r"\d+m \d+s", cells[2]), cells
        sessions = {int(r["session"]): r["node"] for r in await _rows(browser, "sessions")}
        assert sessions == ids
        # the procedure called across nodes, with its calls, errors and latency percentiles
        await browser.wait_for("!!document.querySelector('#procedures tr[data-uri=\"com.example.add\"]')")
        proc = next(r for r in await _rows(browser, "procedures") if r["uri"] == "com.example.add")
        assert number(proc["cells"][2]) == 21 and proc["cells"][4] == "0" and float(proc["cells"][5]) > 0, proc
        # the charts have axes with units
        assert await browser.wait_for("document.querySelector('#chart-rate').dataset.points >= 2")
        labels = await browser.evaluate("[...document.querySelectorAll('#chart-rate text')].map((t) => t.textContent)")
        assert "msg/s" in labels and "now" in labels and "-60 s" in labels, labels
        # one session's details
        await browser.evaluate(f"document.querySelector('#sessions tr[data-session=\"{victim.welcome.session}\"]')"
                               ".click()")
        shown = json.loads(await browser.wait_for(
            f"document.querySelector('#details').textContent.includes('\"session\": {victim.welcome.session}') && "
            "document.querySelector('#details').textContent"))
        assert shown["node"] == "b" and shown["realm"] == "realm1"

        kill = f"document.querySelector('#sessions tr[data-session=\"{victim.welcome.session}\"] button.kill').click()"
        await browser.evaluate(kill)  # no token typed: refused
        assert await browser.wait_for("document.querySelector('#s-result').dataset.outcome") == "403"
        await sleep(0.3)
        assert not victim.left.called
        await browser.evaluate(f"(() => {{ const t = document.querySelector('#token'); t.value = '{TOKEN}'; "
                               "t.dispatchEvent(new Event('change')); })()")
        await browser.wait_for(f"!!document.querySelector('#sessions tr[data-session=\"{victim.welcome.session}\"] "
                               "button.kill:not(:disabled)')")
        await browser.evaluate(kill)
        details = await with_timeout(victim.left, 10)
        assert details.reason == "wamp.close.killed", details  # the GOODBYE, on the other node
        await browser.wait_for("document.querySelectorAll('#sessions tbody tr[data-session]').length === 3")
        # the screenshot is of the page under a load (calls across nodes and publications), its charts drawn
        ticks = [0]

        def tick() -> None:
            ticks[0] += 1
            caller.call("com.example.add", ticks[0], 1).addErrback(lambda f: None)
            caller.publish("com.example.news", ticks[0], options=PublishOptions(acknowledge=True)).addErrback(
                lambda f: None)

        loop = task.LoopingCall(tick)
        loop.start(0.01)
        try:
            await browser.wait_for("document.querySelector('#chart-latency').dataset.points >= 8", 30)
            shot = tmp_path / "status.png"
            await browser.screenshot(shot)
        finally:
            loop.stop()
        # the other node's own view
        await browser.evaluate("document.querySelector('#nodes tr[data-node=\"b\"]').click()")
        await browser.wait_for("document.querySelector('#node').textContent.startsWith('b ')")
    finally:
        browser.close()
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    keep = os.environ.get("COURTYARD_SCREENSHOT")
    if keep:
        shutil.copyfile(shot, keep)
    for c in (callee, caller, listener):
        c.leave()
