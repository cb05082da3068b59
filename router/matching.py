"""URI pattern index for registrations and subscriptions (WAMP pattern_based_registration and
pattern_based_subscription): exact, prefix and wildcard entries, each found without scanning
unrelated ones.

- exact: one dict hit, so exact routing costs what it did before patterns existed;
- prefix: a dict per prefix, probed only at the lengths some prefix actually has;
- wildcard: a trie over URI components where "" (the empty component) matches any one component.

`best(uri)` is the dealer's choice (exact beats prefix beats wildcard; the longest prefix; the
wildcard with the most concrete components, then the earliest), `matches(uri)` the broker's (all).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

V = TypeVar("V")

MATCH_POLICIES = ("exact", "prefix", "wildcard")  # WAMP's match option for REGISTER and SUBSCRIBE


class _Node:
    __slots__ = ("children", "value")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.value = None


class PatternIndex(Generic[V]):
    def __init__(self) -> None:
        self.exact: dict[str, V] = {}
        self._prefix: dict[str, V] = {}
        self._prefix_lengths: dict[int, int] = {}  # length → how many prefixes have it
        self._lengths_desc: list[int] = []  # the same lengths, longest first
        self._wild = _Node()
        self._wild_count = 0

    def __len__(self) -> int:
        return len(self.exact) + len(self._prefix) + self._wild_count

    # -- by key ----------------------------------------------------------------------------------
    def get(self, uri: str, match: str) -> V | None:
        if match == "exact":
            return self.exact.get(uri)
        if match == "prefix":
            return self._prefix.get(uri)
        node = self._wild
        for part in uri.split("."):
            node = node.children.get(part)
            if node is None:
                return None
        return node.value

    def add(self, uri: str, match: str, value: V) -> None:
        if match == "exact":
            self.exact[uri] = value
        elif match == "prefix":
            self._prefix[uri] = value
            self._prefix_lengths[len(uri)] = self._prefix_lengths.get(len(uri), 0) + 1
            self._lengths_desc = sorted(self._prefix_lengths, reverse=True)
        else:
            node = self._wild
            for part in uri.split("."):
                node = node.children.setdefault(part, _Node())
            if node.value is None:
                self._wild_count += 1
            node.value = value

    def remove(self, uri: str, match: str) -> None:
        if match == "exact":
            del self.exact[uri]
        elif match == "prefix":
            del self._prefix[uri]
            n = self._prefix_lengths[len(uri)] - 1
            if n:
                self._prefix_lengths[len(uri)] = n
            else:
                del self._prefix_lengths[len(uri)]
                self._lengths_desc = sorted(self._prefix_lengths, reverse=True)
        else:
            path = [self._wild]
            for part in uri.split("."):
                path.append(path[-1].children[part])
            path[-1].value = None
            self._wild_count -= 1
            parts = uri.split(".")
            for i in range(len(parts) - 1, -1, -1):  # prune empty branches
                node = path[i + 1]
                if node.value is None and not node.children:
                    del path[i].children[parts[i]]
                else:
                    break

    # -- by URI ----------------------------------------------------------------------------------
    def best(self, uri: str) -> V | None:
        """The one entry a CALL to `uri` goes to, or None."""
        value = self.exact.get(uri)
        if value is not None:
            return value
        if self._lengths_desc:
            for length in self._lengths_desc:
                if length <= len(uri):
                    value = self._prefix.get(uri[:length])
                    if value is not None:
                        return value
        if self._wild_count:
            best, best_rank = None, None
            for rank, value in self._wild_matches(uri):
                if best_rank is None or rank > best_rank:
                    best, best_rank = value, rank
            return best
        return None

    def matches(self, uri: str) -> Iterator[V]:
        """Every entry an EVENT for `uri` goes to: exact, then prefixes, then wildcards."""
        value = self.exact.get(uri)
        if value is not None:
            yield value
        for length in self._lengths_desc:
            if length <= len(uri):
                value = self._prefix.get(uri[:length])
                if value is not None:
                    yield value
        if self._wild_count:
            for _, value in self._wild_matches(uri):
                yield value

    def _wild_matches(self, uri: str) -> Iterator[tuple[tuple, V]]:
        """Walk the trie along `uri`, following both the concrete and the "" child at each step.
        The rank is which components were concrete (more, and earlier, is more specific)."""
        parts = uri.split(".")
        stack = [(self._wild, 0, ())]
        while stack:
            node, depth, rank = stack.pop()
            if depth == len(parts):
                if node.value is not None:
                    yield (sum(rank), rank), node.value
                continue
            child = node.children.get(parts[depth])
            if child is not None and parts[depth] != "":
                stack.append((child, depth + 1, (*rank, 1)))
            child = node.children.get("")
            if child is not None:
                stack.append((child, depth + 1, (*rank, 0)))

    def values(self) -> Iterator[V]:
        yield from self.exact.values()
        yield from self._prefix.values()
        stack = [self._wild]
        while stack:
            node = stack.pop()
            if node.value is not None:
                yield node.value
            stack.extend(node.children.values())
