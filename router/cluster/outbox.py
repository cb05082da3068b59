"""Messages to other nodes, sent together (calls, answers, events): what one reactor turn has for a node goes out as one
bus message (one PUBLISH, one delivery), because Redis's and the client's cost is mostly per message,
not per byte. Each item is packed once when queued; order per node is kept.

Bounded: an item is refused at once while Redis is away; a batch is sent when it reaches
`MAX_BATCH_BYTES` (or at the end of the turn), and past the bus's own in-flight limit its items fail.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
from twisted.internet import reactor
from twisted.logger import Logger

from router.cluster.connection import connected

BATCH = "batch"  # [item, ...], each item msgpack [kind, body]
MAX_BATCH_BYTES = 1024 * 1024
MAX_ITEM_BYTES = 7 * 1024 * 1024  # under the bus's limit for one message (8 MiB), with room for the rest


class Outbox:
    log = Logger()

    def __init__(self, bus: Any, redis: Any) -> None:
        self.bus = bus
        self.redis = redis
        self._handlers: dict[str, Callable[[str, Any], None]] = {}
        self._boxes: dict[str, tuple[list[bytes], list[Callable[[], None]], list[int]]] = {}
        self._call = None
        bus.on(BATCH, self._received)

    def on(self, kind: str, handler: Callable[[str, Any], None]) -> None:
        self._handlers[kind] = handler

    def send_many(self, nodes: list[str], kind: str, body: Any, failed: Callable[[], None]) -> bool:
        """`send` to several nodes, the item packed once for all of them (an event's payload is
        serialized once per publication, not once per node). False: nothing queued (see `send`)."""
        if not connected(self.redis):
            self.bus.stats.dropped += len(nodes)
            return False
        try:
            item = msgpack.packb([kind, body], use_bin_type=True)
        except Exception:  # not representable in msgpack (an int past 64 bits)
            self.bus.stats.dropped += len(nodes)
            return False
        if len(item) > MAX_ITEM_BYTES:
            self.bus.stats.dropped += len(nodes)
            return False
        for node in nodes:
            self._queue(node, item, failed)
        return True

    def send(self, node: str, kind: str, body: Any, failed: Callable[[], None]) -> bool:
        """Queue for `node`; `failed()` later if the batch cannot be sent or nobody listens there.
        False (and nothing queued): Redis is away, or the item is too large for the bus."""
        if not connected(self.redis):
            self.bus.stats.dropped += 1
            return False
        item = msgpack.packb([kind, body], use_bin_type=True)
        if len(item) > MAX_ITEM_BYTES:
            self.bus.stats.dropped += 1
            return False
        self._queue(node, item, failed)
        return True

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

        self.bus.send(node, BATCH, items).addCallbacks(lambda n: None if n else lost(), lost)

    def _received(self, sender: str, items: list) -> None:
        for item in items:
            try:
                kind, body = msgpack.unpackb(item, raw=False, strict_map_key=False)
                handler = self._handlers.get(kind)
                if handler is not None:
                    handler(sender, body)
            except Exception:  # one bad item (a bug): say so, handle the others
                self.log.failure("a batched message from node {node} could not be handled", node=sender)
