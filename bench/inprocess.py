"""`python -m bench.inprocess`: the router's own Python cost per PUBLISH fanned out to 8 subscribers and per
routed call (CALL → INVOCATION → YIELD → RESULT), through the real WampProtocol, Broker and Dealer over a
wire that writes nowhere: no sockets, no load processes, so two versions of the code can be compared to
within a few percent on a machine too noisy for `scripts/bench` to show that (run it in each checkout with
the same Python; the fastest of several runs is the figure).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from router.config import parse
from router.node import Node
from router.protocol import ESTABLISHED, WampProtocol
from router.serializers import create
from router.transport.rawsocket import RawSocketCodec

ROLES = {"subscriber": {}, "publisher": {}, "caller": {}, "callee": {}}


class NullWire:
    """A transport that takes every write and sends nothing."""

    transport = None

    def send_payload(self, payload: bytes, bulk: bool) -> None:
        return None

    def send_prepared(self, frame: object) -> None:
        return None

    def close_transport(self, reason: str) -> None:
        pass


def fastest(fn: Callable[[], None], n: int, runs: int) -> float:
    """Microseconds per call of fn in the fastest of `runs` runs of `n` calls."""
    best = float("inf")
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - t0) / n)
    return best * 1e6


def measure(runs: int = 7) -> dict[str, float]:
    node = Node(parse({"admin": {"data_dir": None}}))
    realm = node.realm_router("realm1")
    codec = RawSocketCodec(create("msgpack", 64))
    encode = codec.serializer.encode

    def peer(i: int) -> WampProtocol:
        p = WampProtocol(node, NullWire(), codec, ("127.0.0.1", 1000 + i))
        p.session = node.table.open("realm1", p, peer=None, agent=None, roles=ROLES, authid=f"a{i}",
                                    authrole="anonymous", authmethod="anonymous", authprovider="static", realm=realm)
        p.state = ESTABLISHED
        return p

    for i in range(8):
        peer(i).on_message(encode([32, 1, {}, "bench.topic"]))
    publisher, callee, caller = peer(100), peer(101), peer(102)
    callee.on_message(encode([64, 1, {}, "bench.echo"]))
    publish = encode([16, 1, {}, "bench.topic", [1, 2, 3]])
    seq = [0]

    def call() -> None:
        seq[0] += 1
        caller.on_message(encode([48, seq[0], {}, "bench.echo", [1]]))
        callee.on_message(encode([70, callee.session.seq, {}, [2]]))

    return {"publish to 8": fastest(lambda: publisher.on_message(publish), 20_000, runs),
            "call": fastest(call, 10_000, runs)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7)
    for name, us in measure(p.parse_args().runs).items():
        print(f"{name:14} {us:6.2f} us")


if __name__ == "__main__":
    main()
