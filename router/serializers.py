"""WAMP serializers: encode and decode between wire bytes and message lists.

JSON carries binary per the spec's convention: a bytes value travels as a string of a NUL character
followed by its base64. msgpack and CBOR carry binary natively.

Every decoded message is checked before anything else looks at it (`check`): nesting depth, what it
expands to (CBOR's shared references can make 153 bytes decode to millions of nodes), and that it holds
only WAMP's data model (str-keyed dicts, lists, str, bytes, bool, None, int, float).
"""

from __future__ import annotations

import base64
import json

import msgpack


class SerializationError(ValueError):
    """The payload could not be decoded; the peer gets ABORT wamp.error.protocol_violation."""


DEFAULT_MAX_DEPTH = 64
_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})


class _Bad(Exception):
    pass


_EXPANDS = "expands beyond its size (shared references?)"


# Cheap tests that prove a decoded message needs no walk (see `check`). JSON text decodes to a tree of
# portable values: only depth and lone surrogates need a look.
# msgpack decodes to a tree too; a byte that could be a container, ext or bin header is a reason to look.
_MSGPACK_SUSPECT = bytes(range(0x80, 0xA0)) + bytes(range(0xC4, 0xCA)) + bytes(range(0xD4, 0xD9)) + bytes(
    range(0xDC, 0xE0))
_MSGPACK_INNOCENT = bytes(b for b in range(256) if b not in _MSGPACK_SUSPECT)
_MSGPACK_BRANCHY = bytes(range(0xC4, 0xCA)) + bytes(range(0xD4, 0xD9))  # bin and ext headers


def check(msg: object, size: int, max_depth: int, strict_text: bool = False) -> None:
    """Raise SerializationError unless `msg` (decoded from `size` bytes) nests at most `max_depth` deep,
    expands to no more than its encoding (one unit per value plus the length of each string: an honest
    encoding is never smaller), and holds only WAMP's data model. `strict_text` also refuses strings
    that are not valid Unicode (JSON's lone surrogate escapes). What one serializer carries and another
    cannot (an integer past 2^64 for msgpack, NaN for JSON) is left to the receiving peer's encoder."""
    try:
        _walk(msg, max_depth, size + 64, strict_text)
    except _Bad as e:
        raise SerializationError(str(e)) from None


def _walk(value: object, depth: int, budget: int, strict_text: bool) -> int:
    """Visit a decoded value; returns the budget left. Recursion is bounded by `depth`."""
    t = type(value)
    if t is list or t is dict:
        if depth <= 0:
            raise _Bad("nested too deep")
        budget -= 1 + len(value)
        if t is dict:
            for k in value:
                if type(k) is not str:
                    raise _Bad("dictionary keys must be strings")
                budget -= len(k)
                if strict_text:
                    _text(k)
            value = value.values()
        if budget < 0:
            raise _Bad(_EXPANDS)
        for v in value:
            tv = type(v)
            if tv is list or tv is dict or tv is str or tv is bytes:
                budget = _walk(v, depth - 1, budget, strict_text)
            elif tv not in _SCALARS:
                raise _Bad(f"a value of type {tv.__name__} is not WAMP data")
        return budget
    if t is str:
        if strict_text:
            _text(value)
        budget -= len(value)
    elif t is bytes:
        budget -= len(value)
    elif t not in _SCALARS:
        raise _Bad(f"a value of type {t.__name__} is not WAMP data")
    if budget < 0:
        raise _Bad(_EXPANDS)
    return budget


def _text(s: str) -> None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise _Bad("a string is not valid Unicode (lone surrogate)") from None


def _reason(e: BaseException) -> str:
    """A decoder's complaint, short: some quote the bytes they choke on."""
    text = str(e) or type(e).__name__
    return text if len(text) <= 120 else text[:117] + "..."


class Serializer:
    name: str  # the subprotocol suffix: "json", "msgpack"
    binary: bool  # WebSocket frame type

    def __init__(self, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        self.max_depth = max_depth

    def encode(self, msg: list) -> bytes:
        raise NotImplementedError

    def decode(self, payload: bytes) -> object:
        raise NotImplementedError


def _json_default(value: object) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\x00" + base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _unbinary(value: object) -> object:
    """Turn "\\0<base64>" strings back into bytes, anywhere in a decoded message (checked already, so
    its depth is bounded)."""
    t = type(value)
    if t is str:
        if value[:1] == "\x00":
            return base64.b64decode(value[1:], validate=True)  # not base64: refused, not guessed
        return value
    if t is list:
        return [_unbinary(v) for v in value]
    if t is dict:
        return {k: _unbinary(v) for k, v in value.items()}
    return value


class JsonSerializer(Serializer):
    name = "json"
    binary = False

    def __init__(self, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        super().__init__(max_depth)
        # allow_nan=False: NaN and Infinity are not JSON; a float of that kind from a msgpack or CBOR
        # peer cannot be written to a JSON peer (that peer's problem alone, see WampProtocol.send).
        self._encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_json_default,
                                         allow_nan=False)
        self._decode = json.JSONDecoder(parse_constant=_no_constant).decode

    def encode(self, msg: list) -> bytes:
        return self._encoder.encode(msg).encode("utf-8")

    def decode(self, payload: bytes) -> object:
        try:
            text = payload.decode("utf-8")
            msg = self._decode(text)
        except (UnicodeDecodeError, ValueError, RecursionError) as e:
            raise SerializationError(f"invalid JSON: {_reason(e)}") from None
        # A lone surrogate can only come from a \\uD8xx..\\uDFxx escape, so only then are strings checked.
        surrogates = "\\ud" in text or "\\uD" in text
        if surrogates or payload.count(b"[") + payload.count(b"{") > self.max_depth:
            check(msg, len(payload), self.max_depth, surrogates)
        # Only walk the message when it can hold a binary value: NUL is always escaped in JSON text.
        if "\\u0000" in text:
            try:
                msg = _unbinary(msg)
            except ValueError as e:
                raise SerializationError(f"invalid binary value: {_reason(e)}") from None
        return msg


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


class MsgpackSerializer(Serializer):
    name = "msgpack"
    binary = True

    def __init__(self, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        super().__init__(max_depth)
        self._packb = msgpack.Packer(use_bin_type=True).pack

    def encode(self, msg: list) -> bytes:
        return self._packb(msg)

    def decode(self, payload: bytes) -> object:
        try:
            msg = msgpack.unpackb(payload, raw=False, strict_map_key=True)
        except Exception as e:  # msgpack raises several unrelated types for bad input
            raise SerializationError(f"invalid msgpack: {_reason(e)}") from None
        # The container, bin and ext header bytes bound the depth; without bin or ext there are no bytes
        # keys or foreign types either. Data bytes may look like headers too: then it walks for nothing.
        suspects = payload.translate(None, _MSGPACK_INNOCENT)
        if len(suspects) > self.max_depth or suspects.translate(None, _MSGPACK_BRANCHY) != suspects:
            check(msg, len(payload), self.max_depth)
        return msg


class CborSerializer(Serializer):
    name = "cbor"
    binary = True

    def __init__(self, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        super().__init__(max_depth)
        import cbor2

        self._dumps = cbor2.dumps
        self._loads = cbor2.loads

    def encode(self, msg: list) -> bytes:
        return self._dumps(msg)

    def decode(self, payload: bytes) -> object:
        try:
            msg = self._loads(payload)
        except Exception as e:  # cbor2 raises several types for bad input
            raise SerializationError(f"invalid CBOR: {_reason(e)}") from None
        check(msg, len(payload), self.max_depth)  # before anything repr()s, copies or re-encodes it
        return msg


SERIALIZERS: dict[str, type[Serializer]] = {"json": JsonSerializer, "msgpack": MsgpackSerializer,
                                            "cbor": CborSerializer}
# RawSocket handshake serializer ids (WAMP spec, "RawSocket Transport").
RAWSOCKET_IDS = {1: "json", 2: "msgpack", 3: "cbor"}


def create(name: str, max_depth: int = DEFAULT_MAX_DEPTH) -> Serializer:
    return SERIALIZERS[name](max_depth)
