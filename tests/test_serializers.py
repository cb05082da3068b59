"""JSON (with the spec's binary convention) and msgpack round trips."""

from __future__ import annotations

import pytest

from router.serializers import CborSerializer, JsonSerializer, MsgpackSerializer, SerializationError

MSG = [48, 1, {"k": [1, 2.5, None, True]}, "com.example", ["ü", b"\x00\x01\xfe"], {"bin": b"zz"}]


@pytest.mark.parametrize("ser", [JsonSerializer(), MsgpackSerializer(), CborSerializer()])
def test_round_trip(ser):
    assert ser.decode(ser.encode(MSG)) == MSG


def test_json_binary_convention_on_the_wire():
    raw = JsonSerializer().encode([1, b"\x01\x02"])
    assert raw == b'[1,"\\u0000AQI="]'


@pytest.mark.parametrize("payload", [b"[1,", b"\xff\xfe", b'["\\u0000!!notbase64"]'])
def test_json_garbage(payload):
    with pytest.raises(SerializationError):
        JsonSerializer().decode(payload)


def test_msgpack_garbage():
    with pytest.raises(SerializationError):
        MsgpackSerializer().decode(b"\xc1")


def test_cbor_garbage():
    with pytest.raises(SerializationError):
        CborSerializer().decode(b"\xff\xff\x00")
