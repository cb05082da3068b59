"""A shopping cart per WAMP session: the example of config/examples/session_process.yaml.

The cart lives in the router beside its session and goes when the session goes; a client reaches it
with `courtyard.process.call({"op": ...})`. Checking out publishes the order to the realm through
the router (`self.realm`), so a back end subscribed to `com.example.orders` takes it from there.
"""

from __future__ import annotations

from typing import Any

from router.processes import SessionProcess

MAX_ITEMS = 100  # distinct items in one cart
MAX_NAME = 100  # characters of an item's name


class Cart(SessionProcess):
    def init(self, session_details: dict, arg: Any) -> None:
        self.owner = session_details["authid"]
        self.items: dict[str, int] = {}

    def handle_call(self, request: Any) -> Any:
        """`{"op": "add"|"remove", "item": name, "qty": n}`, `{"op": "list"}` or `{"op": "checkout"}`."""
        op = request.get("op") if isinstance(request, dict) else None
        if op == "add" or op == "remove":
            return self._change(op, request.get("item"), request.get("qty", 1))
        if op == "list":
            return self._view()
        if op == "checkout":
            if not self.items:
                return {"error": "the cart is empty"}
            order = {"owner": self.owner, "items": self.items}
            self.realm.publish("com.example.orders", order)
            self.items = {}
            return {"ordered": order["items"]}
        return {"error": "op must be add, remove, list or checkout"}

    def handle_cast(self, request: Any) -> None:
        """Fire and forget: `{"op": "add", ...}` without waiting for the cart."""
        self.handle_call(request)

    def terminate(self, reason: str) -> None:
        """The session ended with things in the cart: say so (a reminder e-mail, say)."""
        if self.items:
            self.realm.publish("com.example.carts.abandoned", {"owner": self.owner, "items": self.items,
                                                               "reason": reason})

    def _change(self, op: str, item: Any, qty: Any) -> dict:
        if not isinstance(item, str) or not 0 < len(item) <= MAX_NAME or type(qty) is not int or not 0 < qty <= 1000:
            return {"error": f"item must be a name of 1..{MAX_NAME} characters and qty 1..1000"}
        if op == "add":
            if item not in self.items and len(self.items) >= MAX_ITEMS:
                return {"error": f"a cart holds at most {MAX_ITEMS} items"}
            self.items[item] = min(self.items.get(item, 0) + qty, 1_000_000)
        else:
            left = self.items.get(item, 0) - qty
            if left > 0:
                self.items[item] = left
            else:
                self.items.pop(item, None)
        return self._view()

    def _view(self) -> dict:
        return {"items": self.items, "count": sum(self.items.values())}
