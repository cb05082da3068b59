"""The WAMP v2 vocabulary: message codes, error and close URIs, URI rules and message-shape validation.

Messages travel through the router as plain lists (the decoded wire form), never as objects: the hot
path reads fields by index. This module is the only place that knows what a well-formed message is.
"""

from __future__ import annotations

import random
import reprlib

from realms.errors import WampError as WampError  # the one error type answered as ERROR (re-exported)
from realms.uris import is_loose_uri, no_forbidden
from router import __version__

# -- message codes (WAMP spec, "Message Codes and Direction") -------------------------------------
HELLO = 1
WELCOME = 2
ABORT = 3
CHALLENGE = 4
AUTHENTICATE = 5
GOODBYE = 6
ERROR = 8
PUBLISH = 16
PUBLISHED = 17
SUBSCRIBE = 32
SUBSCRIBED = 33
UNSUBSCRIBE = 34
UNSUBSCRIBED = 35
EVENT = 36
CALL = 48
CANCEL = 49
RESULT = 50
REGISTER = 64
REGISTERED = 65
UNREGISTER = 66
UNREGISTERED = 67
INVOCATION = 68
INTERRUPT = 69
YIELD = 70

MESSAGE_NAMES = {
    HELLO: "HELLO", WELCOME: "WELCOME", ABORT: "ABORT", CHALLENGE: "CHALLENGE",
    AUTHENTICATE: "AUTHENTICATE", GOODBYE: "GOODBYE", ERROR: "ERROR", PUBLISH: "PUBLISH",
    PUBLISHED: "PUBLISHED", SUBSCRIBE: "SUBSCRIBE", SUBSCRIBED: "SUBSCRIBED",
    UNSUBSCRIBE: "UNSUBSCRIBE", UNSUBSCRIBED: "UNSUBSCRIBED", EVENT: "EVENT", CALL: "CALL",
    CANCEL: "CANCEL", RESULT: "RESULT", REGISTER: "REGISTER", REGISTERED: "REGISTERED",
    UNREGISTER: "UNREGISTER", UNREGISTERED: "UNREGISTERED", INVOCATION: "INVOCATION",
    INTERRUPT: "INTERRUPT", YIELD: "YIELD",
}

# -- error and close reasons (WAMP spec, "Predefined URIs") ---------------------------------------
INVALID_URI = "wamp.error.invalid_uri"
INVALID_ARGUMENT = "wamp.error.invalid_argument"
PROTOCOL_VIOLATION = "wamp.error.protocol_violation"
PAYLOAD_SIZE_EXCEEDED = "wamp.error.payload_size_exceeded"
NO_SUCH_PROCEDURE = "wamp.error.no_such_procedure"
PROCEDURE_ALREADY_EXISTS = "wamp.error.procedure_already_exists"
PROCEDURE_EXISTS_WITH_DIFFERENT_INVOCATION_POLICY = "wamp.error.procedure_exists_with_different_invocation_policy"
FEATURE_NOT_SUPPORTED = "wamp.error.feature_not_supported"
NO_SUCH_REGISTRATION = "wamp.error.no_such_registration"
NO_SUCH_SUBSCRIPTION = "wamp.error.no_such_subscription"
NO_SUCH_SESSION = "wamp.error.no_such_session"
NO_SUCH_REALM = "wamp.error.no_such_realm"
NO_SUCH_ROLE = "wamp.error.no_such_role"
NO_AUTH_METHOD = "wamp.error.no_auth_method"
NOT_AUTHORIZED = "wamp.error.not_authorized"
AUTHENTICATION_FAILED = "wamp.error.authentication_failed"
CANCELED = "wamp.error.canceled"
TIMEOUT = "wamp.error.timeout"
SYSTEM_SHUTDOWN = "wamp.close.system_shutdown"
CLOSE_REALM = "wamp.close.close_realm"
GOODBYE_AND_OUT = "wamp.close.goodbye_and_out"
CLOSE_NORMAL = "wamp.close.normal"
KILLED = "wamp.close.killed"

# payload_passthru_mode: the options that travel unchanged from PUBLISH/CALL/YIELD into EVENT/INVOCATION/RESULT.
PPT_KEYS = ("ppt_scheme", "ppt_serializer", "ppt_cipher", "ppt_keyid")

# Courtyard's own URIs, for conditions the spec does not name.
RATE_LIMITED = "courtyard.error.rate_limited"
QUOTA_EXCEEDED = "courtyard.error.quota_exceeded"
TOO_MANY_SESSIONS = "courtyard.error.too_many_sessions"
SESSION_EXPIRED = "courtyard.close.session_expired"
SESSION_IDLE = "courtyard.close.idle_timeout"
TOO_MANY_SUBSCRIPTIONS = "courtyard.error.too_many_subscriptions"
TOO_MANY_REGISTRATIONS = "courtyard.error.too_many_registrations"

MAX_ID = 2**53
ROUTER_AGENT = f"Courtyard-{__version__}"  # the router's own agent, in WELCOME and its in-router sessions

# -- URIs (WAMP spec, "URIs"): the loose rule lives in realms/uris.py, shared with the config checks --
_uri_cache: dict[str, bool] = {}
_URI_CACHE_MAX = 10_000
# Only URIs up to this many characters are cached, so the cache holds at most ~2.5 MB of keys: a
# longer URI (a client may send megabytes) is checked each time, in time linear in its length.
URI_CACHE_KEY_MAX = 256


# The longest URI the router takes from a client (`limits.max_uri_length`). The spec sets no maximum; a
# URI is kept for as long as the subscription, registration or retained event that names it, so it is
# bounded. Process-wide: set once when a node starts (one node per process in production).
DEFAULT_MAX_URI_LENGTH = 4096
max_uri_length = DEFAULT_MAX_URI_LENGTH


def set_max_uri_length(n: int) -> None:
    """Configure the limit (at node start); cached verdicts made under another limit are forgotten."""
    global max_uri_length
    max_uri_length = n
    _uri_cache.clear()


def too_long(uri: object) -> bool:
    """A string URI longer than `max_uri_length` characters."""
    return type(uri) is str and len(uri) > max_uri_length


def uri_refusal(what: str, uri: object) -> str:
    """The text of an invalid_uri answer: says so when the URI is only too long."""
    if too_long(uri):
        return (f"{what} URI of {len(uri)} characters is longer than this router takes "
                f"({max_uri_length}, limits.max_uri_length): {quote(uri)}")
    return f"invalid {what} URI {quote(uri)}"


def is_valid_uri(uri: object) -> bool:
    """True for a loose-rule URI. Cached and bounded in count and bytes, because clients repeat the same few URIs."""
    ok = _uri_cache.get(uri) if type(uri) is str else False
    if ok is None:
        ok = len(uri) <= max_uri_length and is_loose_uri(uri)
        if len(uri) <= URI_CACHE_KEY_MAX:
            if len(_uri_cache) >= _URI_CACHE_MAX:
                _uri_cache.clear()
            _uri_cache[uri] = ok
    return ok


def is_valid_pattern(uri: object, match: str) -> bool:
    """A subscription/registration URI under the given match policy."""
    if match == "exact":
        return is_valid_uri(uri)
    return type(uri) is str and len(uri) <= max_uri_length and no_forbidden(uri)


def is_reserved(uri: str) -> bool:
    """The `wamp.` namespace belongs to the router (meta API); clients may not register or publish there."""
    return uri.startswith("wamp.")


# -- message shapes --------------------------------------------------------------------------------
# For each message a client may send: the types of the mandatory fields after the code, then how many
# optional trailing fields may follow and their types. "id" is an integer in [0, 2^53]; "uri" a string
# (URI rules are checked where the meaning is known, so the right ERROR can be sent).
_ID, _URI, _DICT, _LIST, _STR, _INT = "id", "uri", "dict", "list", "str", "int"
_SHAPES: dict[int, tuple[tuple[str, ...], tuple[str, ...]]] = {
    HELLO: ((_URI, _DICT), ()),
    AUTHENTICATE: ((_STR, _DICT), ()),
    ABORT: ((_DICT, _URI), ()),
    GOODBYE: ((_DICT, _URI), ()),
    ERROR: ((_INT, _ID, _DICT, _URI), (_LIST, _DICT)),
    PUBLISH: ((_ID, _DICT, _URI), (_LIST, _DICT)),
    SUBSCRIBE: ((_ID, _DICT, _URI), ()),
    UNSUBSCRIBE: ((_ID, _ID), ()),
    CALL: ((_ID, _DICT, _URI), (_LIST, _DICT)),
    CANCEL: ((_ID, _DICT), ()),
    REGISTER: ((_ID, _DICT, _URI), ()),
    UNREGISTER: ((_ID, _ID), ()),
    YIELD: ((_ID, _DICT), (_LIST, _DICT)),
}


def _field_ok(kind: str, value: object) -> bool:
    t = type(value)
    if kind == _ID:
        return t is int and 0 <= value <= MAX_ID
    if kind == _DICT:
        return t is dict
    if kind == _URI or kind == _STR:
        return t is str
    if kind == _LIST:
        return t is list
    return t is int


_quoter = reprlib.Repr()
_quoter.maxstring = 80
_quoter.maxother = 80
_quoter.maxlevel = 2
_quoter.maxlist = _quoter.maxtuple = _quoter.maxdict = _quoter.maxset = 4
_quoter.maxlong = 40


def quote(value: object) -> str:
    """A short, escaped repr of client data for error texts and log lines: never the whole of it, never
    a raw newline (a forged log line), whatever its size, depth or type."""
    try:
        return _quoter.repr(value)
    except Exception:  # a repr that fails is still no reason to fail the message
        return f"<{type(value).__name__}>"


def printable(text: str, limit: int = 300) -> str:
    """Text that may hold client bytes, for a log line or an HTTP reason: control characters escaped,
    at most `limit` characters (the router's own words around client data are not cut as short as
    `quote` cuts the data itself)."""
    if not text.isprintable():
        text = text[:limit].encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else text[:limit - 3] + "..."


def validate(msg: object) -> str | None:
    """Check a decoded message's shape. Returns None when well formed, else why not (for ABORT)."""
    if type(msg) is not list or not msg:
        return "a WAMP message must be a non-empty array"
    code = msg[0]
    shape = _SHAPES.get(code) if type(code) is int else None
    if shape is None:
        return f"message type {quote(code)} is not one a client may send to a router"
    mandatory, optional = shape
    n = len(msg) - 1
    if n < len(mandatory) or n > len(mandatory) + len(optional):
        return f"{MESSAGE_NAMES[code]} has {n} fields, expected {len(mandatory)}..{len(mandatory) + len(optional)}"
    kinds = mandatory + optional
    for i in range(n):
        if not _field_ok(kinds[i], msg[i + 1]):
            return f"{MESSAGE_NAMES[code]} field {i + 1} must be {kinds[i]}"
    return None


def error(request_type: int, request_id: int, uri: str, args: list | None = None,
          kwargs: dict | None = None, details: dict | None = None) -> list:
    """An ERROR message in reply to a request."""
    msg = [ERROR, request_type, request_id, details or {}, uri]
    if args or kwargs:
        msg.append(args or [])
        if kwargs:
            msg.append(kwargs)
    return msg


class ProtocolViolation(Exception):
    """Raised by a handler for a message that breaks the protocol; the session is ABORTed with
    wamp.error.protocol_violation and this text."""


_ids = random.Random()


def global_id() -> int:
    """A global-scope id (publication, subscription, registration): random in [1, 2^53] (WAMP spec, IDs)."""
    return _ids.getrandbits(53) + 1
