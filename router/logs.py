"""Where `courtyard start` logs to and how: text for people (Twisted's format), or JSON lines for a
log shipper — one object a line with `time`, `level`, `namespace`, `message` (the formatted line) and
the event's own fields (session, realm, authid, peer, reason…), each a JSON value; an event field
named like one of those four is written as `event_<name>`. A worker (`--workers N`) tags its lines:
`[w1] ` before each text line, `"worker": "w1"` in each JSON object."""

from __future__ import annotations

import json
import re
import sys
from typing import IO, Any

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogFilterPredicate,
    ILogObserver,
    LogLevel,
    LogLevelFilterPredicate,
    PredicateResult,
    formatEvent,
    formatEventAsClassicLogText,
    globalLogBeginner,
    textFileLogObserver,
)
from zope.interface import implementer, provider

FORMATS = ("text", "json")
_SCALARS = (str, int, float, bool, type(None))


def _value(v: Any, depth: int = 0) -> Any:
    """A JSON value for an event field: scalars as they are, lists and mappings shallowly, else text."""
    if isinstance(v, _SCALARS):
        return v
    if depth < 3 and isinstance(v, (list, tuple, set, frozenset)):
        return [_value(x, depth + 1) for x in list(v)[:100]]
    if depth < 3 and isinstance(v, dict):
        return {str(k): _value(x, depth + 1) for k, x in list(v.items())[:100]}
    return str(v)


_node_id: str | None = None  # on every JSON line, once the config is read (set_node)


def set_node(node_id: str | None) -> None:
    """The node's id (cluster.node_id, else node.name), written as `node_id` on every JSON line."""
    global _node_id
    _node_id = node_id


def json_record(event: dict) -> dict:
    """One event as the JSON object written for it."""
    record = {
        "time": event.get("log_time"),
        "level": event["log_level"].name if "log_level" in event else None,
        "namespace": event.get("log_namespace"),
        "message": formatEvent(event),
    }
    if _node_id is not None:
        record["node_id"] = _node_id
    legacy = event.get("log_namespace") == "log_legacy"  # twisted.python.log: its `message` and `time`
    for key, value in event.items():  # repeat the line and the time: not written twice
        if legacy and key in ("message", "time", "isError"):
            continue
        if not key.startswith("log_"):  # a field named like ours (a GOODBYE `message`) keeps a prefix
            record[f"event_{key}" if key in record else key] = _value(value)
    if "log_failure" in event:
        record["traceback"] = event["log_failure"].getTraceback()
    return record


def json_lines_observer(out: IO[str], tag: str | None = None) -> ILogObserver:
    @provider(ILogObserver)
    def observe(event: dict) -> None:
        record = json_record(event)
        if tag is not None:
            record["worker"] = tag
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        out.flush()

    return observe


def tagged_text_observer(out: IO[str], tag: str) -> ILogObserver:
    """Twisted's text lines, each event's written at once (one write, then flush: the workers share
    the output), with `[tag] ` in front."""
    def format_event(event: dict) -> str | None:
        text = formatEventAsClassicLogText(event)
        return None if text is None else f"[{tag}] {text}"

    return FileLogObserver(out, format_event)


class ReopenableFile:
    """The log file, opened again by `reopen` (SIGHUP, after logrotate moved it away): the observers
    write through this, so they need not be rebuilt."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file = open(path, "a", buffering=1, encoding="utf-8")

    def write(self, text: str) -> int:
        return self._file.write(text)

    def flush(self) -> None:
        self._file.flush()

    def reopen(self) -> None:
        """Open the path again (OSError: the old file stays in use)."""
        new = open(self.path, "a", buffering=1, encoding="utf-8")
        old, self._file = self._file, new
        old.close()


_log_file: ReopenableFile | None = None  # --log-file, once logging has begun


def reopen() -> str | None:
    """Reopen --log-file (None: logging to stdout, nothing to do). Returns its path; OSError if it
    cannot be opened again (the old one is kept)."""
    if _log_file is None:
        return None
    _log_file.reopen()
    return _log_file.path


def begin(level: str, fmt: str = "text", path: str | None = None, tag: str | None = None) -> None:
    """Start logging at `level` and above, as `fmt`, to `path` (appended to) or stdout; `tag`: a
    worker's id, on every line."""
    global _log_file
    out: Any = sys.stdout
    if path:
        out = _log_file = ReopenableFile(path)
    if fmt == "json":
        observer = json_lines_observer(out, tag)
    else:
        observer = textFileLogObserver(out) if tag is None else tagged_text_observer(out, tag)
    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(level))
    noise = _TwistedNoise(LogLevel.levelWithName(level))
    # The Redis client's reconnecting service logs every retry; a cluster node says once when Redis goes
    # and once when it is back (router/cluster/membership.py).
    predicate.setLogLevelForNamespace("twisted.application._client_service", LogLevel.warn)
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(observer, [noise, predicate])], redirectStandardIO=False)


# Twisted's own lines about every port it opens and closes ("WampWebSocketFactory starting on 8080",
# "(TCP Port 8080 Closed)"): the router says where it listens in its own words. Kept at debug.
_NOISE = re.compile(r"\S+ starting on \S+|\(\S+ Port \S+ Closed\)|(Starting|Stopping) factory .*", re.S)


@implementer(ILogFilterPredicate)
class _TwistedNoise:
    def __init__(self, level: LogLevel) -> None:
        self.debug = level <= LogLevel.debug

    def __call__(self, event: dict) -> PredicateResult:
        if event.get("log_namespace") == "log_legacy" and not self.debug:
            message = event.get("message") or ("",)
            text = message[0] if isinstance(message, tuple) and len(message) == 1 else None
            if isinstance(text, str) and len(text) < 300 and _NOISE.fullmatch(text):
                return PredicateResult.no
        return PredicateResult.maybe
