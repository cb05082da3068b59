"""The WAMP URI rule (the spec's loose rules, so that existing applications keep working): one copy,
here in `realms/` because the config checks and the admin API need it too; `router.wamp` checks what
clients send with it.

A loose URI: components separated by ".", none empty, no whitespace or "#" anywhere. A pattern URI
(prefix / wildcard registrations and subscriptions) may have empty components. Checked without a
regex walking the components: that costs ~150 ns per character, and a URI may be a megabyte.
"""

from __future__ import annotations

import re

_FORBIDDEN = re.compile(r"[\s#]")
_FORBIDDEN_ASCII = tuple(c for c in map(chr, range(128)) if c.isspace()) + ("#",)
_FAST_SCAN_FROM = 256  # characters: past this, an ASCII URI is scanned with `in` (memchr speed)


def no_forbidden(uri: str) -> bool:
    """No whitespace and no '#' anywhere."""
    if len(uri) > _FAST_SCAN_FROM and uri.isascii():
        return not any(c in uri for c in _FORBIDDEN_ASCII)  # a few memchr-speed scans
    return _FORBIDDEN.search(uri) is None


def is_loose_uri(uri: str) -> bool:
    """A URI a client may name (a realm in HELLO, a topic, a procedure), length aside."""
    return uri != "" and uri[0] != "." and uri[-1] != "." and ".." not in uri and no_forbidden(uri)
