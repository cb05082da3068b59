"""Headless Chromium driven over the Chrome DevTools Protocol, for the status page tests that must act
on the page (type the admin token, click a kill button) and not only read its DOM: a real browser, a
real WebSocket to its debugging endpoint (Autobahn's client), on loopback; stopped by PID."""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

from autobahn.twisted.util import sleep
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol, connectWS
from twisted.internet import defer, threads

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


class _Devtools(WebSocketClientProtocol):
    def onOpen(self) -> None:
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        msg = json.loads(payload)
        d = self.factory.pending.pop(msg.get("id"), None)
        if d is not None:
            d.callback(msg)

    def onClose(self, wasClean: bool, code: Any, reason: Any) -> None:
        if not self.factory.opened.called:
            self.factory.opened.errback(ConnectionError(f"devtools refused: {reason}"))
        for d in self.factory.pending.values():
            d.errback(ConnectionError("devtools connection closed"))
        self.factory.pending.clear()


class Browser:
    def __init__(self, profile: Path, width: int = 1280, height: int = 1700) -> None:
        self.profile = profile
        self.size = (width, height)
        self.proc: subprocess.Popen | None = None
        self._ids = itertools.count(1)
        self._proto: Any = None

    async def open(self, url: str, timeout: float = 30.0) -> Browser:
        assert CHROMIUM, "headless Chromium is required (apt-get install -y chromium)"
        self.profile.mkdir(parents=True, exist_ok=True)
        self._log = open(self.profile / "chromium.log", "w")
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "--remote-allow-origins=*",
             f"--user-data-dir={self.profile}", f"--window-size={self.size[0]},{self.size[1]}", url],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, "HOME": str(self.profile)})
        active = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while not (active.exists() and active.read_text().count("\n") >= 1):
            assert self.proc.poll() is None, (self.proc.returncode, (self.profile / "chromium.log").read_text()[-2000:])
            assert time.monotonic() < deadline, "chromium did not open its debugging port"
            await sleep(0.1)
        port = int(active.read_text().split()[0])
        page = None
        while page is None and time.monotonic() < deadline:
            targets = await threads.deferToThread(_get_json, f"http://127.0.0.1:{port}/json/list")
            page = next((t for t in targets if t.get("type") == "page"), None)
            if page is None:
                await sleep(0.1)
        assert page is not None, "chromium opened no page"
        factory = WebSocketClientFactory(page["webSocketDebuggerUrl"])
        factory.protocol = _Devtools
        factory.opened, factory.pending = defer.Deferred(), {}
        connectWS(factory, timeout=10)
        self._proto = await factory.opened
        self._factory = factory
        return self

    async def send(self, method: str, **params: Any) -> dict:
        rid = next(self._ids)
        d = defer.Deferred()
        self._factory.pending[rid] = d
        self._proto.sendMessage(json.dumps({"id": rid, "method": method, "params": params}).encode())
        from twisted.internet import reactor

        answer = await d.addTimeout(30, reactor)
        assert "error" not in answer, answer
        return answer["result"]

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a Promise is awaited)."""
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    async def wait_for(self, expression: str, seconds: float = 20.0) -> Any:
        """The expression's value once it is truthy (checked every 0.1 s, at most `seconds`)."""
        value = None
        for _ in range(int(seconds * 10)):
            value = await self.evaluate(expression)
            if value:
                return value
            await sleep(0.1)
        raise AssertionError(f"never true: {expression} (last: {value!r})")

    async def screenshot(self, path: Path) -> None:
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        if self._proto is not None:
            self._proto.dropConnection(abort=True)
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.proc is not None:
            self._log.close()


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())
