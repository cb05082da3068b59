"""The cluster tests' own redis-server: started on a free loopback port without persistence, stopped by PID."""

from __future__ import annotations

import os


def test_redis_server_fixture_answers_and_keeps_nothing_on_disk(redis_server):
    assert redis_server.command("PING") == "+PONG"
    assert redis_server.command("CONFIG", "GET", "save") == ["save", ""]
    assert redis_server.command("CONFIG", "GET", "appendonly") == ["appendonly", "no"]
    assert redis_server.command("SET", "k", "v") == "+OK" and redis_server.command("GET", "k") == "v"
    pid = redis_server.proc.pid
    redis_server.stop()
    try:
        os.kill(pid, 0)
        alive = True
    except ProcessLookupError:
        alive = False
    assert not alive
