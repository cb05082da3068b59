"""The one error type answered to a WAMP peer as ERROR: a URI, a message, and the ERROR's own Arguments
and ArgumentsKw. Every layer's errors derive from it (the meta API's, the dealer's refusals, session
processes', the admin realm's, another node's answer) and are recognised by `isinstance`, not by
looking for a `uri` attribute. It lives in `realms/` because the admin realm raises it and `realms/`
never imports `router/`; `router.wamp` re-exports it as `wamp.WampError`."""

from __future__ import annotations

from typing import Any


class WampError(Exception):
    """Answered as ERROR `uri` with Arguments `args` (default: `[message]`) and ArgumentsKw `kwargs`."""

    def __init__(self, uri: str, message: str, args: list | None = None, kwargs: dict | None = None) -> None:
        super().__init__(message)
        self.uri = uri
        self.message = message
        self.wamp_args: list[Any] = list(args) if args is not None else [message]
        self.wamp_kwargs: dict[str, Any] = dict(kwargs) if kwargs else {}
