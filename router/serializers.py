"""WAMP serializers: encode and decode between wire bytes and message lists.

JSON carries binary per the spec's convention: a bytes value travels as a string of a NUL character
followed by its base64. msgpack and CBOR carry binary natively.
"""

from __future__ import annotations

import base64
import json

import msgpack


class SerializationError(ValueError):
    """The payload could not be decoded; the peer gets ABORT wamp.error.protocol_violation."""


class Serializer:
    name: str  # the subprotocol suffix: "json", "msgpack"
    binary: bool  # WebSocket frame type

    def encode(self, msg: list) -> bytes:
        raise NotImplementedError

    def decode(self, payload: bytes) -> object:
        raise NotImplementedError


def _json_default(value: object) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\x00" + base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _unbinary(value: object) -> object:
    """Turn "\\0<base64>" strings back into bytes, anywhere in a decoded message."""
    t = type(value)
    if t is str:
        if value[:1] == "\x00":
            return base64.b64decode(value[1:])
        return value
    if t is list:
        return [_unbinary(v) for v in value]
    if t is dict:
        return {k: _unbinary(v) for k, v in value.items()}
    return value


class JsonSerializer(Serializer):
    name = "json"
    binary = False

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, default=_json_default)
        self._decode = json.JSONDecoder().decode

    def encode(self, msg: list) -> bytes:
        return self._encoder.encode(msg).encode("utf-8")

    def decode(self, payload: bytes) -> object:
        try:
            text = payload.decode("utf-8")
            msg = self._decode(text)
        except (UnicodeDecodeError, ValueError) as e:
            raise SerializationError(f"invalid JSON: {e}") from None
        # Only walk the message when it can hold a binary value: NUL is always escaped in JSON text.
        if "\\u0000" in text:
            try:
                msg = _unbinary(msg)
            except ValueError as e:
                raise SerializationError(f"invalid binary value: {e}") from None
        return msg


class MsgpackSerializer(Serializer):
    name = "msgpack"
    binary = True

    def __init__(self) -> None:
        self._packb = msgpack.Packer(use_bin_type=True).pack

    def encode(self, msg: list) -> bytes:
        return self._packb(msg)

    def decode(self, payload: bytes) -> object:
        try:
            return msgpack.unpackb(payload, raw=False, strict_map_key=True)
        except Exception as e:  # msgpack raises several unrelated types for bad input
            raise SerializationError(f"invalid msgpack: {e}") from None


class CborSerializer(Serializer):
    name = "cbor"
    binary = True

    def __init__(self) -> None:
        import cbor2

        self._dumps = cbor2.dumps
        self._loads = cbor2.loads

    def encode(self, msg: list) -> bytes:
        return self._dumps(msg)

    def decode(self, payload: bytes) -> object:
        try:
            return self._loads(payload)
        except Exception as e:  # cbor2 raises several types for bad input
            raise SerializationError(f"invalid CBOR: {e}") from None


SERIALIZERS: dict[str, type[Serializer]] = {"json": JsonSerializer, "msgpack": MsgpackSerializer,
                                            "cbor": CborSerializer}
# RawSocket handshake serializer ids (WAMP spec, "RawSocket Transport").
RAWSOCKET_IDS = {1: "json", 2: "msgpack", 3: "cbor"}


def create(name: str) -> Serializer:
    return SERIALIZERS[name]()
