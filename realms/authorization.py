"""Role → permission rules on URI patterns, and the per-role decision cache.

Which rule applies to a URI (the most specific one wins):
1. an `exact` rule for that URI;
2. else the `prefix` rule with the longest matching prefix;
3. else the matching `wildcard` rule with the most non-empty components, then the longest pattern
   (a wildcard pattern has the URI's number of components; an empty component matches any one);
4. else nothing: every action is denied.
The decision per (action, URI) is cached per role, so the per-message cost is one dict hit.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ACTIONS = ("call", "register", "publish", "subscribe")
_CACHE_MAX = 10_000
# Decisions are cached only for URIs up to this many characters, so a role's cache holds at most
# ~2.5 MB of keys however long the URIs clients send; a longer one is decided each time.
CACHE_KEY_MAX = 256


@dataclass(frozen=True)
class Permission:
    uri: str
    match: str = "exact"  # exact | prefix | wildcard
    allow: frozenset[str] = frozenset()  # of ACTIONS
    disclose: frozenset[str] = frozenset()  # "caller", "publisher": identity disclosed to the other side

    def matches(self, uri: str) -> bool:
        if self.match == "exact":
            return uri == self.uri
        if self.match == "prefix":
            return uri.startswith(self.uri)
        want = self.uri.split(".")
        got = uri.split(".")
        return len(want) == len(got) and all(w == "" or w == g for w, g in zip(want, got, strict=True))

    def specificity(self) -> tuple:
        """Orders rules for rule 1-3 above: larger is more specific."""
        rank = {"exact": 2, "prefix": 1, "wildcard": 0}[self.match]
        parts = sum(1 for c in self.uri.split(".") if c) if self.match == "wildcard" else 0
        return (rank, len(self.uri) if self.match == "prefix" else parts, len(self.uri))


@dataclass
class Role:
    name: str
    permissions: tuple[Permission, ...] = ()
    limits: object = None  # realms.realm.Limits, or None to use the realm's
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def rule_for(self, uri: str) -> Permission | None:
        best = None
        for p in self.permissions:
            if p.matches(uri) and (best is None or p.specificity() > best.specificity()):
                best = p
        return best

    def allows(self, what: str, uri: str) -> bool:
        """Whether the role may do `what` on `uri`: an action ("call", "register", "publish",
        "subscribe"), or a disclosure ("caller", "publisher": the role's identity is shown there)."""
        key = (what, uri)
        ok = self._cache.get(key)
        if ok is None:
            rule = self.rule_for(uri)
            ok = rule is not None and (what in rule.allow or what in rule.disclose)
            self._remember(key, uri, ok)
        return ok

    def allows_pattern(self, what: str, pattern: str, match: str) -> bool:
        """A prefix or wildcard SUBSCRIBE/REGISTER: allowed only if `what` is allowed on every URI the
        pattern can match, so a pattern cannot reach past the role's rules. The deciding rule must
        cover the whole pattern (a prefix rule its literal start begins with, else a wildcard rule at
        least as general), and every more specific rule that could apply under it must allow too.
        Conservative where exactness would cost a search: a wildcard pattern is judged by its literal
        start (the components before its first empty one)."""
        key = (what, pattern, match)
        ok = self._cache.get(key)
        if ok is None:
            ok = self._pattern_ok(what, pattern, match)
            self._remember(key, pattern, ok)
        return ok

    def _remember(self, key: tuple, uri: str, ok: bool) -> None:
        if len(uri) <= CACHE_KEY_MAX:
            if len(self._cache) >= _CACHE_MAX:
                self._cache.clear()
            self._cache[key] = ok

    def _pattern_ok(self, what: str, pattern: str, match: str) -> bool:
        literal = pattern if match == "prefix" else _literal_start(pattern)
        prefixes = [p for p in self.permissions if p.match == "prefix" and literal.startswith(p.uri)]
        if prefixes:
            cover = max(prefixes, key=lambda p: len(p.uri))
        else:
            wilds = [p for p in self.permissions if p.match == "wildcard" and match == "wildcard"
                     and _wildcard_covers(p.uri, pattern)]
            if not wilds:
                return False
            cover = max(wilds, key=Permission.specificity)
        if what not in cover.allow:
            return False
        shape = Permission(pattern, match)
        for p in self.permissions:
            if p is cover or what in p.allow:
                continue
            if p.match == "exact" and shape.matches(p.uri):
                return False
            if p.match == "prefix" and len(p.uri) > len(cover.uri if cover.match == "prefix" else "") and (
                    p.uri.startswith(literal) or literal.startswith(p.uri)):
                return False
            if p.match == "wildcard" and cover.match == "wildcard" and p.specificity() > cover.specificity() \
                    and _wildcards_overlap(p.uri, pattern):
                return False
        return True

    def allows_everything(self) -> bool:
        """A role with a rule allowing every action on every URI needs no per-message check."""
        return any(p.match == "prefix" and p.uri == "" and p.allow >= set(ACTIONS) and not p.disclose
                   for p in self.permissions) and all(
            p.allow >= set(ACTIONS) for p in self.permissions)


def _literal_start(wildcard: str) -> str:
    """The part of a wildcard pattern every URI it matches begins with: "com.app..x" → "com.app."."""
    parts = wildcard.split(".")
    n = parts.index("") if "" in parts else len(parts)
    return "".join(c + "." for c in parts[:n])


def _wildcard_covers(rule: str, pattern: str) -> bool:
    """Whether the wildcard `rule` matches every URI the wildcard `pattern` matches."""
    r, q = rule.split("."), pattern.split(".")
    return len(r) == len(q) and all(a == "" or a == b for a, b in zip(r, q, strict=True))


def _wildcards_overlap(a: str, b: str) -> bool:
    """Whether some URI matches both wildcard patterns."""
    x, y = a.split("."), b.split(".")
    return len(x) == len(y) and all(i == "" or j == "" or i == j for i, j in zip(x, y, strict=True))
