"""Message-shape validation and URI rules."""

from __future__ import annotations

import pytest

from router import wamp


@pytest.mark.parametrize("msg", [
    [1, "realm1", {}],
    [48, 1, {}, "a.b"],
    [48, 1, {}, "a.b", []],
    [48, 1, {}, "a.b", [], {}],
    [70, 1, {}],
    [8, 68, 1, {}, "a.error"],
    [16, 2**53, {}, "t"],
])
def test_valid(msg):
    assert wamp.validate(msg) is None


@pytest.mark.parametrize("msg", [
    None, {}, [], ["x"], [True, 1], [2, 1, {}], [48, 1, {}], [48, True, {}, "a"], [48, 1.0, {}, "a"],
    [48, 1, {}, "a", {}], [48, 1, {}, "a", [], []], [48, 1, {}, "a", [], {}, 1], [1, 5, {}],
])
def test_invalid(msg):
    assert isinstance(wamp.validate(msg), str)


@pytest.mark.parametrize("uri,ok", [
    ("com.example.x", True), ("a", True), ("com.ex-ample.X_1", True), ("", False), ("a..b", False),
    (".a", False), ("a.", False), ("a b", False), ("a.#", False), (5, False), (None, False),
])
def test_uri(uri, ok):
    assert wamp.is_valid_uri(uri) is ok


def test_error_message_shape():
    assert wamp.error(48, 7, "x.y") == [8, 48, 7, {}, "x.y"]
    assert wamp.error(48, 7, "x.y", ["a"]) == [8, 48, 7, {}, "x.y", ["a"]]
    assert wamp.error(48, 7, "x.y", kwargs={"k": 1}) == [8, 48, 7, {}, "x.y", [], {"k": 1}]


def test_global_ids_in_range():
    ids = [wamp.global_id() for _ in range(1000)]
    assert all(1 <= i <= 2**53 for i in ids)
