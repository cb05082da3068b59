"""Admin users across a cluster (issue 24): `admin.users` come from each node's YAML, and every node
accepts the same admin logins — a user only one node's file has logs in on every node, a ticket
rotated by a reload on one node is rotated everywhere, a user removed from every file is gone.
Real `courtyard start` processes on a real redis-server; logins by the admin CLI and by autobahn
clients on the admin realm (each from its own loopback address, so the failure throttle, which
counts per address and authid, never blocks a login the test expects to work)."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import time

import pytest_twisted
import yaml

from realms.secrets import hash_secret
from tests.helpers.admin import cli
from tests.helpers.cluster import ADMIN, NODE_TIMEOUT, node_process
from tests.helpers.poll import until, wait
from tests.wampclient import Aborted, answer_ticket, connect

ensure = pytest_twisted.ensureDeferred
REALM = "courtyard.admin"
PROPAGATION = 3.0  # seconds a change on one node may take to reach the others (typically milliseconds)
_addresses = (f"127.0.0.{i}" for i in itertools.cycle(range(2, 250)))


def _admin(**tickets: str) -> dict:
    """The test admin plus ticket users `authid=ticket`."""
    users = {**ADMIN["users"], **{a: {"ticket": hash_secret(t, iterations=1000)} for a, t in tickets.items()}}
    return {"data_dir": None, "users": users}


async def _login(node, authid: str, ticket: str) -> str:
    """'welcome', or the ABORT reason: a ticket login to the admin realm of `node`."""
    try:
        client = await connect(node.url, realm=REALM, authmethods=["ticket"], authid=authid,
                               on_challenge=answer_ticket(ticket), bind=next(_addresses))
    except Aborted as e:
        return e.reason
    client.leave()
    return "welcome"


async def _becomes(node, authid: str, ticket: str, outcome: str) -> float:
    """Seconds until the login gives `outcome` (bounded by PROPAGATION)."""
    t0 = time.monotonic()
    got: list[str] = []

    async def check() -> bool:
        got.append(await _login(node, authid, ticket))
        return got[-1] == outcome

    while not await check():
        assert time.monotonic() - t0 < PROPAGATION, f"{authid} on {node.url}: {got[-1]}, not {outcome}"
    return time.monotonic() - t0


def _reload(node, admin: dict | None = None) -> None:
    """SIGHUP, with `admin` as the file's new admin section (None: the file as it is)."""
    if admin is not None:
        config = yaml.safe_load(node.config_path.read_text())
        config["admin"] = admin
        node.config_path.write_text(yaml.safe_dump(config))
    offset = len(node.log())
    node.signal(signal.SIGHUP)
    wait(lambda: "reloaded" in node.log()[offset:], 10, "the reload")


def _cli(node, authid: str, ticket: str) -> subprocess.CompletedProcess:
    return cli("nodes", "list", url=node.url, login=("--authid", authid, "--ticket", ticket))


@ensure
async def test_a_user_only_one_node_has_logs_in_on_every_node_until_removed(tmp_path, redis_server):
    a = node_process(tmp_path, "a", redis_server.url, {"admin": _admin(ops="ops-pw")}).start()
    b = node_process(tmp_path, "b", redis_server.url, {"admin": _admin(dev="dev-pw")}).start()
    try:
        r = _cli(b, "ops", "ops-pw")  # `courtyard admin --url B` with a user only A's YAML has
        assert r.returncode == 0 and "ws://" in r.stdout, r.stdout + r.stderr
        await _becomes(a, "dev", "dev-pw", "welcome")  # b joined after a: a learns b's users too
        assert _cli(b, "ops", "wrong").returncode != 0
        for node in (a, b):
            assert await _login(node, "ops", "wrong") == "wamp.error.authentication_failed"
            assert await _login(node, "nobody", "ops-pw") == "wamp.error.authentication_failed"
        stored = redis_server.command("HGET", "cy:admin:users", "a")
        assert json.loads(stored)["users"]["ops"]["user"]["ticket"].startswith("pbkdf2-sha256$")
        assert "ops-pw" not in stored and "ops-pw" not in a.log() + b.log()

        r = cli("users", "remove", REALM, "dev", url=a.url, login=("--authid", "ops", "--ticket", "ops-pw"))
        assert r.returncode == 0, r.stdout + r.stderr  # an admin change wins over b's file, on every node
        await _becomes(b, "dev", "dev-pw", "wamp.error.authentication_failed")

        _reload(a, ADMIN)  # ops removed from the only file that had it: gone everywhere
        elapsed = await _becomes(b, "ops", "ops-pw", "wamp.error.authentication_failed")
        assert await _login(a, "ops", "ops-pw") == "wamp.error.authentication_failed"
        print(f"removal reached b in {elapsed:.3f}s")
    finally:
        a.stop()
        b.stop()


@ensure
async def test_a_ticket_rotated_by_a_reload_on_one_node_is_rotated_everywhere(tmp_path, redis_server):
    old = _admin(ops="old-pw")  # the same hash in both files: no conflict yet
    a = node_process(tmp_path, "a", redis_server.url, {"admin": old}).start()
    b = node_process(tmp_path, "b", redis_server.url, {"admin": old}).start()
    try:
        assert await _login(b, "ops", "old-pw") == "welcome"
        assert "admin.users defined differently" not in a.log() + b.log()
        r = cli("users", "add", REALM, "api", "--role", "admin", "--secret", "api-pw", url=a.url,
                login=("--authid", "admin", "--ticket", "s3cret"))  # an admin change: lies over the YAML's
        assert r.returncode == 0, r.stdout + r.stderr
        _reload(a, _admin(ops="new-pw"))  # b's file still has the old ticket: a's, loaded last, wins
        elapsed = await _becomes(b, "ops", "new-pw", "welcome")
        print(f"rotation reached b in {elapsed:.3f}s")
        for node in (a, b):
            assert await _login(node, "ops", "old-pw") == "wamp.error.authentication_failed"
            assert await _login(node, "ops", "wrong") == "wamp.error.authentication_failed"
        assert await _login(a, "ops", "new-pw") == "welcome"
        for node in (a, b):
            assert await _login(node, "api", "api-pw") == "welcome"
        await until(lambda: "admin.users defined differently" in b.log(), 5, "b's conflict line")
        line = next(x for x in b.log().splitlines() if "admin.users defined differently" in x)
        assert "ops (node a's" in line and "over b's" in line, line
        assert "pw" not in line and "pbkdf2" not in line, line
        # a reload of b that leaves ops as it was keeps a's newer definition
        _reload(b)
        await until(lambda: False, 0.3, fail=False)
        assert await _login(b, "ops", "new-pw") == "welcome"
        assert await _login(b, "ops", "old-pw") == "wamp.error.authentication_failed"
    finally:
        a.stop()
        b.stop()


@ensure
async def test_after_a_redis_restart_each_node_writes_its_admin_users_again(tmp_path, redis_server):
    a = node_process(tmp_path, "a", redis_server.url, {"admin": _admin(ops="ops-pw")}).start()
    b = node_process(tmp_path, "b", redis_server.url).start()
    try:
        assert await _login(b, "ops", "ops-pw") == "welcome"
        redis_server.stop()
        redis_server.start()  # empty: no persistence
        await until(lambda: redis_server.command("HEXISTS", "cy:admin:users", "a") == 1, 10, "a's entry again")
        assert await _becomes(b, "ops", "ops-pw", "welcome") < PROPAGATION
        c = node_process(tmp_path, "c", redis_server.url).start()  # knows ops only from Redis
        try:
            assert await _login(c, "ops", "ops-pw") == "welcome"
            assert await _login(c, "ops", "wrong") == "wamp.error.authentication_failed"
        finally:
            c.stop()
    finally:
        a.stop()
        b.stop()


def test_the_admin_users_of_a_node_no_longer_alive_do_not_count(tmp_path, redis_server):
    """A user only a dead node had is refused once the node is taken for dead (its entry, still in
    Redis, is ignored); a node that stops gracefully removes its entry."""
    a = node_process(tmp_path, "a", redis_server.url, {"admin": _admin(ops="ops-pw")}).start()
    b = node_process(tmp_path, "b", redis_server.url).start()
    c = node_process(tmp_path, "c", redis_server.url, {"admin": _admin(dev="dev-pw")}).start()
    try:
        assert _cli(b, "ops", "ops-pw").returncode == 0
        a.stop()  # SIGKILL
        t0 = time.monotonic()
        wait(lambda: _cli(b, "ops", "ops-pw").returncode != 0, 10, "ops refused on b")
        print(f"a's users dropped {time.monotonic() - t0:.1f}s after its death (node_timeout {NODE_TIMEOUT}s)")
        assert redis_server.command("HEXISTS", "cy:admin:users", "a") == 1  # left, and ignored
        assert _cli(b, "admin", "s3cret").returncode == 0
        assert _cli(b, "dev", "dev-pw").returncode == 0
        c.signal(signal.SIGTERM)
        c.proc.wait(15)
        assert redis_server.command("HEXISTS", "cy:admin:users", "c") == 0
        wait(lambda: _cli(b, "dev", "dev-pw").returncode != 0, 10, "dev refused on b")
    finally:
        for node in (a, b, c):
            node.stop()
