"""The URI pattern index: exact, prefix and wildcard lookups, and their precedence."""

from __future__ import annotations

from router.matching import PatternIndex


def _index(*entries):
    idx = PatternIndex()
    for uri, match in entries:
        idx.add(uri, match, f"{match}:{uri}")
    return idx


def test_exact_beats_prefix_beats_wildcard():
    idx = _index(("com.a.b", "exact"), ("com.a", "prefix"), ("com..b", "wildcard"))
    assert idx.best("com.a.b") == "exact:com.a.b"
    assert idx.best("com.a.c") == "prefix:com.a"
    assert idx.best("com.x.b") == "wildcard:com..b"
    assert idx.best("org.a.b") is None


def test_longest_prefix_wins_and_prefix_is_a_string_prefix():
    idx = _index(("com.", "prefix"), ("com.app.", "prefix"), ("com.app.topic", "prefix"))
    assert idx.best("com.app.topic.x") == "prefix:com.app.topic"
    assert idx.best("com.app.topic2") == "prefix:com.app.topic"
    assert idx.best("com.app.other") == "prefix:com.app."
    assert idx.best("com.zzz") == "prefix:com."
    assert sorted(idx.matches("com.app.topic.x")) == ["prefix:com.", "prefix:com.app.", "prefix:com.app.topic"]


def test_most_specific_wildcard_wins():
    idx = _index(("a..c.", "wildcard"), ("a.b..", "wildcard"), ("...", "wildcard"), ("a.b.c.", "wildcard"))
    assert idx.best("a.b.c.d") == "wildcard:a.b.c."
    assert idx.best("a.x.c.d") == "wildcard:a..c."
    assert idx.best("x.y.z.w") == "wildcard:..."
    assert idx.best("a.b.c") is None  # three components: no four-component pattern matches
    assert sorted(idx.matches("a.b.c.d")) == ["wildcard:...", "wildcard:a..c.", "wildcard:a.b..", "wildcard:a.b.c."]


def test_remove_and_len():
    idx = _index(("a.b", "exact"), ("a.", "prefix"), ("a..c", "wildcard"), ("a..d", "wildcard"))
    assert len(idx) == 4
    idx.remove("a.", "prefix")
    idx.remove("a..c", "wildcard")
    assert idx.best("a.x.c") is None and idx.best("a.x.d") == "wildcard:a..d"
    idx.remove("a..d", "wildcard")
    idx.remove("a.b", "exact")
    assert len(idx) == 0 and list(idx.values()) == []
    assert idx._wild.children == {}  # pruned


def test_get_by_key():
    idx = _index(("a.b", "exact"), ("a.b", "prefix"), ("a..b", "wildcard"))
    assert idx.get("a.b", "exact") == "exact:a.b"
    assert idx.get("a.b", "prefix") == "prefix:a.b"
    assert idx.get("a..b", "wildcard") == "wildcard:a..b"
    assert idx.get("a.x.b", "wildcard") is None
