"""Messages to other nodes, sent together (calls, answers, events): what one reactor turn has for a node goes out as one
bus message (one PUBLISH, one delivery), because Redis's and the client's cost is mostly per message,
not per byte. Each item is packed once when queued; order per node is kept.

Encode once, check once: every value a client's serializer can decode crosses (an integer past msgpack's
64 bits as an extension type, `BIGINT`, given back as the same int), so what one node routes, two route.
An item too large for the bus is refused at once (`send` says why), never left to fail later.

Bounded: an item is refused at once while Redis (the shard of its node's data channel) is away; a
batch is sent when it reaches `MAX_BATCH_BYTES` (or at the end of the turn), and past the bus's own
in-flight limit its items fail.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
from twisted.internet import reactor
from twisted.logger import Logger

from router.cluster.limits import MAX_ITEM_BYTES

BATCH = "batch"  # [item, ...], each item msgpack [kind, body]
MAX_BATCH_BYTES = 1024 * 1024
BIGINT = 1  # msgpack extension type: an integer outside msgpack's range, as its decimal digits
MAX_BIGINT_DIGITS = 10_000  # a longer one is not carried (the client's decoder bounds it anyway)

# Why `send` refused an item (the caller tells its client with the spec's error).
UNAVAILABLE = "unavailable"  # Redis (that node's shard) away
TOO_LARGE = "too_large"  # over MAX_ITEM_BYTES
UNENCODABLE = "unencodable"  # a value msgpack cannot carry even as an extension


_REFUSALS = {TOO_LARGE: ("wamp.error.payload_size_exceeded", "too large to cross to another node of the cluster"),
             UNENCODABLE: ("wamp.error.invalid_argument", "a value cannot cross to another node of the cluster")}


def refusal(refused: str | None, why: str) -> tuple[str, str]:
    """The spec's error (URI, message) for a client whose message `send` refused; `why` for any other
    failure (Redis away, nobody listening: wamp.error.canceled)."""
    return _REFUSALS.get(refused or "", ("wamp.error.canceled", why))


def _default(value: Any) -> Any:
    if type(value) is int:
        digits = str(value)
        if len(digits) <= MAX_BIGINT_DIGITS:
            return msgpack.ExtType(BIGINT, digits.encode())
    raise TypeError(f"cannot carry a {type(value).__name__} across nodes")


def _ext(code: int, data: bytes) -> Any:
    if code == BIGINT:
        return int(data)
    return msgpack.ExtType(code, data)


def pack(value: Any) -> bytes:
    """msgpack, with integers past 64 bits as `BIGINT` (ValueError: not representable at all)."""
    try:
        return msgpack.packb(value, use_bin_type=True, default=_default)
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError(str(e)) from None


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_ext)


class Outbox:
    log = Logger()

    def __init__(self, bus: Any, redis: Any) -> None:
        self.bus = bus
        self.redis = redis
        self._handlers: dict[str, Callable[[str, Any], None]] = {}
        self._boxes: dict[str, tuple[list[bytes], list[Callable[[], None]], list[int]]] = {}
        self._call = None
        self.refused: str | None = None  # why the last `send`/`send_many` that returned False refused
        bus.on(BATCH, self._received)

    def on(self, kind: str, handler: Callable[[str, Any], None]) -> None:
        self._handlers[kind] = handler

    def send_many(self, nodes: list[str], kind: str, body: Any, failed: Callable[[], None]) -> bool:
        """`send` to several nodes, the item packed once for all of them (an event's payload is
        serialized once per publication, not once per node). False: nothing queued (see `send`)."""
        reached = [n for n in nodes if self.bus.reaches(n)]
        item = self._pack(kind, body) if reached else self._away()
        if item is None:
            self.bus.stats.dropped += len(nodes)
            return False
        for _ in range(len(nodes) - len(reached)):  # a shard away: those nodes miss it, as a lost batch
            reactor.callLater(0, failed)
        for node in reached:
            self._queue(node, item, failed)
        return True

    def send(self, node: str, kind: str, body: Any, failed: Callable[[], None]) -> bool:
        """Queue for `node`; `failed()` later if the batch cannot be sent or nobody listens there.
        False (and nothing queued): Redis is away, or the item cannot cross (`refused` says which)."""
        item = self._pack(kind, body) if self.bus.reaches(node) else self._away()
        if item is None:
            self.bus.stats.dropped += 1
            return False
        self._queue(node, item, failed)
        return True

    def _away(self) -> None:
        self.refused = UNAVAILABLE
        return None

    def _pack(self, kind: str, body: Any) -> bytes | None:
        """The item, or None with `refused` set: encoded once and checked once, before anything is queued."""
        try:
            item = pack([kind, body])
        except ValueError:
            self.refused = UNENCODABLE
            return None
        if len(item) > MAX_ITEM_BYTES:
            self.refused = TOO_LARGE
            return None
        return item

    def _queue(self, node: str, item: bytes, failed: Callable[[], None]) -> None:
        box = self._boxes.get(node)
        if box is not None and box[2][0] + len(item) > MAX_BATCH_BYTES:  # a batch stays under the bus's limit
            self._send(node, self._boxes.pop(node))
            box = None
        if box is None:
            box = self._boxes[node] = ([], [], [0])
            if self._call is None:
                self._call = reactor.callLater(0, self.flush)
        box[0].append(item)
        box[1].append(failed)
        box[2][0] += len(item)
        if box[2][0] >= MAX_BATCH_BYTES:
            self._send(node, self._boxes.pop(node))

    def flush(self) -> None:
        self._call = None
        boxes, self._boxes = self._boxes, {}
        for node, box in boxes.items():
            self._send(node, box)

    def _send(self, node: str, box: tuple) -> None:
        items, fails, _ = box

        def lost(*_: Any) -> None:
            self.bus.stats.failed += len(fails)
            for failed in fails:
                failed()

        self.bus.send_data(node, BATCH, items).addCallbacks(lambda n: None if n else lost(), lost)

    def _received(self, sender: str, items: list) -> None:
        for item in items:
            try:
                kind, body = unpack(item)
                handler = self._handlers.get(kind)
                if handler is not None:
                    handler(sender, body)
            except Exception:  # one bad item (a bug): say so, handle the others
                self.log.failure("a batched message from node {node} could not be handled", node=sender)
