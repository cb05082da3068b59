"""Courtyard: a WAMP v2 router. `router` is the mechanism: wire, sessions, routing."""

__version__ = "0.1.0"
