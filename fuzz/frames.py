"""What the fuzzer sends: random values, WAMP messages (well formed, then mutated), and raw bytes.

Every generator is bounded: nesting, lengths and CBOR shared-reference expansions have caps, so a
run costs the router what the caps allow and no more (the point is to find unbounded work in the
router, not to create it in the fuzzer).
"""

from __future__ import annotations

import random
from typing import Any

from fuzz.wire import encode

CODES = (1, 2, 3, 4, 5, 6, 8, 16, 17, 32, 33, 34, 35, 36, 48, 49, 50, 64, 65, 66, 67, 68, 69, 70)
EDGE_INTS = [0, 1, -1, 2**31, 2**32, 2**53 - 1, 2**53, 2**53 + 1, -(2**53), 2**63 - 1, 2**63, -(2**63),
             -(2**63) - 1, 2**64 - 1, 2**64, -(2**64), 2**100, 10**40]
EDGE_FLOATS = [float("nan"), float("inf"), float("-inf"), -0.0, 5e-324, 1.7976931348623157e308, 0.5]
EDGE_STRS = ["", "\x00", "\x00AAAA", "\x00not base64!", "a\x00b", "\ud800", "x\udfffy", "é", "𝄞", "\u2028",
             "\n[forged] log line", "wamp.error.x", "\\u0000", "%s%n{}{0}", "' OR 1=1"]
URIS = ["com.fuzz.a", "com.fuzz.b", "com.fuzz.a.b", "com.fuzz", "com", "fuzz.probe", "wamp.session.count",
        "wamp.session.list", "wamp.session.get", "wamp.subscription.list", "wamp.subscription.lookup",
        "wamp.subscription.match", "wamp.subscription.get", "wamp.subscription.list_subscribers",
        "wamp.registration.list", "wamp.registration.lookup", "wamp.registration.match", "wamp.registration.get",
        "wamp.registration.list_callees", "wamp.registration.count_callees", "wamp.session.add_testament",
        "wamp.session.flush_testaments", "wamp.session.on_join", "wamp.x", "com..a", ".com", "com.", "a b", "",
        "com.#", "ÿ.ü", "\x00", "com.fuzz." + "x" * 300, "realm1", "courtyard.admin", "courtyard.realm.list"]
RARE_URIS = ["wamp.session.kill_all", "wamp.session.kill", "wamp.session.kill_by_authid"]
CLOSE_URIS = ["wamp.close.normal", "wamp.close.goodbye_and_out", "wamp.close.logout", "wamp.error.x", "x"]
OPTION_KEYS = ["acknowledge", "exclude_me", "exclude", "eligible", "exclude_authid", "eligible_authid",
               "exclude_authrole", "eligible_authrole", "match", "invoke", "timeout", "receive_progress",
               "progress", "disclose_me", "retain", "get_retained", "mode", "ppt_scheme", "ppt_serializer",
               "ppt_cipher", "ppt_keyid", "forward_for", "x_custom"]
OPTION_VALUES = [True, False, None, 0, 1, -1, 2**53, 2**64, "prefix", "wildcard", "exact", "single", "roundrobin",
                 "random", "first", "last", "kill", "killnowait", "skip", "", [], {}, [1, 2], ["x"], 0.001, 1e9]


class Gen:
    """A seeded generator of values, messages and frames for one connection's worth of fuzzing."""

    def __init__(self, rng: random.Random, bomb_depth: int, big: bool) -> None:
        self.r = rng
        self.bomb_depth = bomb_depth
        self.big = big  # allow messages near and past the router's 1 MiB limit (rarely)

    # -- values -----------------------------------------------------------------------------------
    def leaf(self) -> Any:
        r = self.r
        k = r.randrange(12)
        if k == 0:
            return None
        if k == 1:
            return r.random() < 0.5
        if k == 2:
            return r.choice(EDGE_INTS)
        if k == 3:
            return r.randint(-(2**40), 2**40)
        if k == 4:
            return r.choice(EDGE_FLOATS)
        if k == 5:
            return r.uniform(-1e6, 1e6)
        if k == 6:
            return r.choice(EDGE_STRS)
        if k == 7:
            return r.randbytes(r.randrange(20))
        if k == 8:
            return "".join(chr(r.randrange(0x110000)) for _ in range(r.randrange(8)))
        if k == 9 and r.random() < 0.05:
            return "s" * r.choice([1000, 10_000, 100_000])
        return "".join(r.choice("abcxyz._ ") for _ in range(r.randrange(10)))

    def value(self, depth: int = 0) -> Any:
        r = self.r
        if depth > 4 or r.random() < 0.5:
            return self.leaf()
        n = r.randrange(5)
        if r.random() < 0.5:
            return [self.value(depth + 1) for _ in range(n)]
        return {self.key(): self.value(depth + 1) for _ in range(n)}

    def key(self) -> Any:
        r = self.r
        if r.random() < 0.45:
            return r.choice(["a", "b", "", "x" * 50, "\x00", "\ud800", "é", "k"])
        if r.random() < 0.9:
            return str(r.random())
        return r.choice([1, -1, 2**64, b"k", b"", True, None, 1.5])

    def args(self) -> list:
        return [self.value() for _ in range(self.r.randrange(4))]

    def kwargs(self) -> dict:
        return {self.key(): self.value() for _ in range(self.r.randrange(4))}

    def uri(self) -> str:
        r = self.r
        if r.random() < 0.002:
            return r.choice(RARE_URIS)
        if r.random() < 0.1:
            return "".join(chr(r.randrange(0x20, 0x3000)) for _ in range(r.randrange(20)))
        return r.choice(URIS)

    def options(self) -> dict:
        r = self.r
        return {r.choice(OPTION_KEYS): r.choice(OPTION_VALUES) for _ in range(r.randrange(4))}

    def request_id(self) -> Any:
        r = self.r
        if r.random() < 0.9:
            return r.randint(1, 1000)
        return r.choice([0, -1, 2**53, 2**53 + 1, 2**64, 1.5, "1", None])

    # -- messages ---------------------------------------------------------------------------------
    def hello(self, realm: str = "realm1") -> list:
        details: dict = {"roles": {"caller": {}, "callee": {}, "publisher": {}, "subscriber": {}}}
        if self.r.random() < 0.1:
            details["authmethods"] = self.r.choice([["anonymous"], ["ticket"], ["cookie"], "anonymous", [1], []])
        if self.r.random() < 0.1:
            details["agent"] = self.r.choice(["fuzz\nforged line", "a" * 5000, 1, None])
        return [1, realm, details]

    def message(self) -> list:
        """A well-formed-looking client message, with random but plausible fields."""
        r = self.r
        kind = r.randrange(14)
        rid = r.randint(1, 1000)
        if kind == 0:
            return [32, rid, self.options(), self.uri()]
        if kind == 1:
            return [34, rid, r.randint(1, 2**53)]
        if kind in (2, 3):
            return [16, rid, {**self.options(), "acknowledge": r.random() < 0.7}, self.uri(), self.args(),
                    self.kwargs()]
        if kind == 4:
            return [64, rid, self.options(), self.uri()]
        if kind == 5:
            return [66, rid, r.randint(1, 2**53)]
        if kind in (6, 7):
            return [48, rid, self.options(), self.uri(), self.args(), self.kwargs()]
        if kind == 8:
            return [49, rid, {"mode": r.choice(["skip", "kill", "killnowait", 1])}]
        if kind == 9:
            return [70, rid, self.options(), self.args(), self.kwargs()]
        if kind == 10:
            return [8, r.choice([68, 48, 16, 1]), rid, {}, self.uri(), self.args()]
        if kind == 11:
            return [6, {}, r.choice(CLOSE_URIS)]
        if kind == 12:
            return [5, r.choice(["sig", "", "x" * 1000]), {}]
        return [r.choice(CODES), *[self.value() for _ in range(r.randrange(6))]]

    def mutate(self, msg: list) -> list:
        """Wrong types, huge numbers, long strings, bad URIs, missing or extra fields, another code."""
        r = self.r
        msg = list(msg)
        op = r.randrange(6)
        if op == 0 and len(msg) > 1:
            msg[r.randrange(1, len(msg))] = self.value()
        elif op == 1 and len(msg) > 1:
            del msg[r.randrange(1, len(msg)):]
        elif op == 2:
            msg.extend(self.value() for _ in range(r.randrange(1, 3)))
        elif op == 3:
            msg[0] = r.choice([*CODES, 0, -1, 2**64, 999, "16", None, 16.0, True])
        elif op == 4 and len(msg) > 1:
            msg[r.randrange(1, len(msg))] = self.request_id()
        else:
            msg[0 if len(msg) == 1 else r.randrange(1, len(msg))] = self.uri()
        return msg

    # -- bytes ------------------------------------------------------------------------------------
    def payload(self, serializer: str, msg: list) -> tuple[str, bytes]:
        """Encode a message, sometimes with a deep, huge or shared-reference part spliced in, sometimes
        with its bytes damaged. Returns (kind, bytes); the kind names the mutation for the report."""
        r = self.r
        x = r.random()
        if x < 0.03:
            return "deep", self._splice(serializer, msg, self._deep(serializer))
        if x < 0.04 and serializer == "cbor" and self.bomb_depth:
            return "cbor-shared-refs", self._splice(serializer, msg, shared_bomb(r.randint(1, self.bomb_depth)))
        if x < 0.05 and serializer == "cbor":
            return "cbor-tag", self._splice(serializer, msg, self._cbor_tag())
        if x < 0.052 and self.big:
            return "huge", self._splice(serializer, msg, encode(serializer, "z" * r.choice([900_000, 1_100_000])))
        try:
            data = encode(serializer, msg)
        except Exception:  # noqa: BLE001 - not encodable by this serializer: send noise instead
            return "random", r.randbytes(r.randrange(1, 64))
        if x < 0.12 and data:
            i = r.randrange(len(data))
            op = r.randrange(3)
            if op == 0:
                return "bytes-truncated", data[:i]
            if op == 1:
                return "bytes-flipped", data[:i] + bytes((data[i] ^ r.randint(1, 255),)) + data[i + 1:]
            return "bytes-inserted", data[:i] + r.randbytes(r.randint(1, 8)) + data[i:]
        if x < 0.14:
            return "random", r.randbytes(r.randrange(1, 200))
        return "message", data

    def _splice(self, serializer: str, msg: list, part: bytes) -> bytes:
        """Ready-made encoded bytes put where the router will look at them: a PUBLISH or CALL argument
        (re-encoded for every listener), the message code (quoted in the ABORT), HELLO roles, or the
        last field of `msg`."""
        marker = "@@fuzz-splice@@"
        r = self.r
        shell = r.choice([
            [16, r.randint(1, 1000), {"acknowledge": True}, r.choice(["com.fuzz.a", "fuzz.probe"]), [marker]],
            [48, r.randint(1, 1000), {}, "com.fuzz.a", [1], {"k": marker}],
            [marker, 1],
            [1, "realm1", {"roles": {"caller": marker}}],
            [1, "realm1", {"roles": {"caller": {}}, "agent": marker}],
            [*msg[:-1], marker] if len(msg) > 1 else [*msg, marker],
        ])
        try:
            data = encode(serializer, shell)
        except Exception:  # noqa: BLE001
            data = encode(serializer, [16, 1, {}, "com.fuzz.a", [marker]])
        hole = b'"' + marker.encode() + b'"' if serializer == "json" else encode(serializer, marker)
        return data.replace(hole, part, 1)

    def _deep(self, serializer: str) -> bytes:
        n = self.r.choice([50, 100, 200, 400, 500, 900, 1000, 1100, 5000, 50_000])
        lst = self.r.random() < 0.7
        if serializer == "json":
            return b"[" * n + b'"\\u0000AA=="' + b"]" * n if lst else b'{"a":' * n + b"1" + b"}" * n
        if serializer == "msgpack":
            return b"\x91" * n + b"\x01" if lst else b"\x81\xa1a" * n + b"\x01"
        return b"\x81" * n + b"\x01" if lst else b"\xa1\x61a" * n + b"\x01"

    def _cbor_tag(self) -> bytes:
        """A CBOR tag the router never asked for: dates, bignums, decimal fractions, regex, sets, undefined,
        a dangling shared reference, a shared reference to itself."""
        return self.r.choice([
            b"\xc0\x74" + b"2026-11-30T00:00:00Z", b"\xc1\x1a\x00\x01\x00\x00", b"\xc2\x49" + b"\x01" * 9,
            b"\xc4\x82\x21\x19\x6a\xb3", b"\xd8\x23\x63a.b", b"\xd9\x01\x02\x82\x01\x02", b"\xf7",
            b"\xd8\x1d\x05", b"\xd8\x1c\x81\xd8\x1d\x00", b"\xd8\x1e\x82\x01\x02", b"\xd9\xd9\xf7\x01",
            b"\xf8\x20", b"\xfb\x7f\xf8\x00\x00\x00\x00\x00\x01", b"\xd8\x18\x41\x01", b"\x7f\x61a\xff",
        ])


def shared_bomb(depth: int) -> bytes:
    """CBOR shared references (tags 28/29): a_0 = [1], a_i = [a_(i-1), a_(i-1)], as one array of all
    levels: a few bytes per level that decode to 2^depth leaves."""
    def uint(i: int) -> bytes:
        return bytes((i,)) if i < 24 else bytes((0x18, i))

    parts = [b"\xd8\x1c\x81\x01"]
    for i in range(1, depth + 1):
        parts.append(b"\xd8\x1c\x82\xd8\x1d" + uint(i - 1) + b"\xd8\x1d" + uint(i - 1))
    n = depth + 1
    return (bytes((0x80 | n,)) if n < 24 else bytes((0x98, n))) + b"".join(parts)
