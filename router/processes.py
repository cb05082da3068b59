"""Session processes (after Phoenix.SessionProcess): server-side state of one WAMP session, supervised,
living and dying with it.

A realm's `session_process` names a class; each session gets at most one instance of it, a *process*.
Requests to a process wait in its mailbox (bounded) and are handled one at a time in arrival order,
like a GenServer's: `init(session_details, arg)` first, then `handle_call(request)` (a value, a
Deferred or a coroutine) and `handle_cast(request)`. A handler that raises fails the request
(`courtyard.error.process_failed`) and the process restarts with a fresh `init`; too many restarts in
a window stop it (and, if configured, end the session). When the session ends, however it ends,
`terminate(reason)` runs and the process is gone: `SessionTable.on_close` is the one hook, because
every ending (GOODBYE, kill, transport loss, expiry, shutdown) passes through `SessionTable.close`.

The WAMP surface, `courtyard.process.call` / `.cast`, is served as dealer built-ins (like the meta
API): one hop, no registration, and a session only ever reaches its own process.
"""

from __future__ import annotations

import inspect
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from realms.realm import SessionProcessConfig
from router import wamp
from router.session import Session, _iso

if TYPE_CHECKING:
    from router.routing import RealmRouter
    from router.service import ServiceSession
    from router.tuplespace import SessionTable

PROCESS_BUSY = "courtyard.error.process_busy"
PROCESS_FAILED = "courtyard.error.process_failed"
NO_SUCH_PROCESS = "courtyard.error.no_such_process"
CLOSE_PROCESS_FAILED = "courtyard.close.process_failed"
CALL = "courtyard.process.call"
CAST = "courtyard.process.cast"
MAX_TEXT = 300  # characters of an exception's text in an ERROR or a log line
MAX_TRACE = 5000  # characters of a traceback in the log (its last frames and the exception)


class ProcessError(wamp.WampError):
    """A session process's request failed: answered as a WAMP ERROR with this URI."""


class SessionProcess:
    """An optional base class: every hook but `handle_call` does nothing. The router sets `realm`
    (a RealmClient) and `session_id` before `init`."""

    realm: RealmClient
    session_id: int

    def init(self, session_details: dict, arg: Any) -> Any:
        return None

    def handle_call(self, request: Any) -> Any:
        raise NotImplementedError

    def handle_cast(self, request: Any) -> Any:
        return None

    def terminate(self, reason: str) -> Any:
        return None


class RealmClient:
    """How a process reaches its realm: through an in-router session (router/service.py), routed like
    a client's CALLs and PUBLISHes."""

    __slots__ = ("_service",)

    def __init__(self, service: ServiceSession) -> None:
        self._service = service

    def publish(self, topic: str, *args: Any, **kwargs: Any) -> None:
        self._service.publish(topic, list(args), kwargs)

    def call(self, procedure: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> defer.Deferred:
        """Deferred: the result (one positional argument), or a failure with the ERROR's `uri`."""
        return self._service.call(procedure, list(args), kwargs, timeout)


class _Request:
    __slots__ = ("kind", "payload", "deferred", "timer")

    def __init__(self, kind: str, payload: Any, deferred: defer.Deferred | None = None) -> None:
        self.kind = kind  # "init", "call" or "cast"
        self.payload = payload
        self.deferred = deferred  # a call's answer
        self.timer = None  # a call's timeout


class Process:
    """One session's process: its instance, its mailbox and its restart history."""

    __slots__ = ("session", "config", "arg", "instance", "mailbox", "busy", "current", "looping", "generation",
                 "restarts", "started", "handled")

    def __init__(self, session: Session, config: SessionProcessConfig, arg: Any) -> None:
        self.session = session
        self.config = config
        self.arg = arg
        self.instance: Any = None
        self.mailbox: list[_Request] = []  # a list, not a deque: most are empty, and a deque costs 600 bytes
        self.busy = False  # a request is being handled
        self.current: _Request | None = None  # that request
        self.looping = False  # Processes._run is working through the mailbox
        self.generation = 0  # +1 at every restart and at the end: a late answer of an old instance is ignored
        self.restarts: list[float] | None = None  # times of recent restarts
        self.started = time.time()
        self.handled = 0

    def to_map(self) -> dict:
        return {"session": self.session.id, "realm": self.session.realm_uri, "class": self.config.cls,
                "started": _iso(self.started), "busy": self.busy, "mailbox": len(self.mailbox),
                "restarts": len(self.restarts or ()), "handled": self.handled}


def _text(e: BaseException) -> str:
    """An exception as one escaped line: it may carry client data (the request)."""
    return wamp.printable(f"{type(e).__name__}: {e}", MAX_TEXT)


class Processes:
    """Every session process of a node, by session id. The in-router API: start, started, terminate,
    call, cast, list."""

    log = Logger()

    def __init__(self, table: SessionTable, realm_config: Callable[[str], SessionProcessConfig | None],
                 service: Callable[[str], ServiceSession | None], clock: Any = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.table = table
        self._config = realm_config  # realm URI → its session_process (read at start: admin updates apply)
        self._service = service  # realm URI → its in-router session, for processes to call and publish
        self.clock = clock
        self._procs: dict[int, Process] = {}
        self._stopped: set[int] = set()  # sessions whose process was stopped after too many restarts
        table.on_ended(self._session_closed)

    # -- the in-router API -----------------------------------------------------------------------
    def start(self, session_id: int, cls: type | None = None, arg: Any = None) -> bool:
        """Start the session's process (of `cls`, else the realm's class). False: it has one already."""
        if session_id in self._procs:
            return False
        session = self.table.lookup(session_id)
        if session is None:
            raise ProcessError(wamp.NO_SUCH_SESSION, f"no session {session_id}")
        config = self._config(session.realm_uri)
        if cls is not None:
            config = SessionProcessConfig(f"{cls.__module__}:{cls.__qualname__}", cls, *_tuning(config))
        elif config is None:
            raise ProcessError(NO_SUCH_PROCESS, f"realm {session.realm_uri} has no session_process class")
        self._stopped.discard(session_id)
        proc = Process(session, config, arg)
        self._begin(proc)
        self._procs[session_id] = proc
        self._run(proc)
        return True

    def started(self, session_id: int) -> bool:
        return session_id in self._procs

    def terminate(self, session_id: int, reason: str = "terminated") -> bool:
        """End the process (its session stays). False: there was none."""
        proc = self._procs.pop(session_id, None)
        if proc is None:
            return False
        self._end(proc, reason)
        return True

    def call(self, session_id: int, request: Any, timeout: float | None = None) -> defer.Deferred:
        """Deferred: what handle_call answers, or ProcessError (busy, failed, none) or wamp.error.timeout
        after `timeout` seconds (default: call_timeout) — the request keeps its place in the mailbox."""
        return self._submit(session_id, request, timeout, defer.Deferred())

    def _submit(self, session_id: int, request: Any, timeout: float | None, d: defer.Deferred) -> defer.Deferred:
        """Queue a call answered through `d` (whose callbacks the caller may have added: a handler that
        answers at once answers before `call` could return)."""
        item = _Request("call", request, d)
        try:
            proc = self._get(session_id)
            self._enqueue(proc, item)
        except ProcessError as e:
            _fail(item, e)
            return d
        if not d.called:  # a timer only for calls not answered at once (most are)
            seconds = timeout if timeout is not None else proc.config.call_timeout
            item.timer = self.clock.callLater(seconds, self._timed_out, item, seconds)
        return d

    def cast(self, session_id: int, request: Any) -> None:
        """Queue a request whose answer nobody waits for (ProcessError: busy or none)."""
        self._enqueue(self._get(session_id), _Request("cast", request))

    def list(self, realm: str | None = None) -> list[dict]:
        return [p.to_map() for p in self._procs.values() if realm is None or p.session.realm_uri == realm]

    def count(self) -> int:
        return len(self._procs)

    def terminate_all(self, reason: str) -> None:
        """Node shutdown: whatever is left (sessions normally took theirs with them)."""
        for session_id in list(self._procs):
            self.terminate(session_id, reason)

    # -- the realm's side: on_join, and the WAMP procedures ----------------------------------------
    def install(self, realm: RealmRouter) -> None:
        """Serve courtyard.process.call / .cast in this realm, and start processes on join."""
        realm.dealer.builtins[CALL] = self._wamp_call
        realm.dealer.builtins[CAST] = self._wamp_cast
        realm.processes = self

    def joined(self, session: Session) -> None:
        config = self._config(session.realm_uri)
        if config is not None and config.start == "on_join":
            try:
                self.start(session.id)
            except ProcessError:  # the class could not be instantiated (logged); the session carries on
                pass

    def _own(self, session: Session) -> Process:
        """The caller's own process; started now under `start: on_demand` (not after a restart storm)."""
        proc = self._procs.get(session.id)
        if proc is not None:
            return proc
        config = self._config(session.realm_uri)
        if config is not None and config.start == "on_demand" and session.id not in self._stopped \
                and self.table.lookup(session.id) is session:
            self.start(session.id)
        return self._get(session.id)

    def _wamp_call(self, session: Session, msg: list) -> None:
        request_id = msg[1]
        try:
            request = _request(msg)
            proc = self._own(session)
        except ProcessError as e:
            session.transport.send(wamp.error(wamp.CALL, request_id, e.uri, [e.message]))
            return
        timeout = msg[2].get("timeout")
        seconds = timeout / 1000.0 if type(timeout) is int and timeout > 0 else None
        if seconds is not None and seconds > proc.config.call_timeout:
            seconds = None

        def answer(result: Any) -> None:
            if self.table.lookup(session.id) is session:  # else it left, or its connection has a new session
                session.transport.send([wamp.RESULT, request_id, {}] if result is None
                                       else [wamp.RESULT, request_id, {}, [result]])

        def refuse(failure: Failure) -> None:
            e = failure.value
            if self.table.lookup(session.id) is session:
                if isinstance(e, wamp.WampError):
                    session.transport.send(wamp.error(wamp.CALL, request_id, e.uri, e.wamp_args, e.wamp_kwargs))
                else:
                    session.transport.send(wamp.error(wamp.CALL, request_id, PROCESS_FAILED, [str(e)]))

        d: defer.Deferred = defer.Deferred()
        d.addCallbacks(answer, refuse)
        self._submit(session.id, request, seconds, d)

    def _wamp_cast(self, session: Session, msg: list) -> None:
        try:
            request = _request(msg)
            self._enqueue(self._own(session), _Request("cast", request))
        except ProcessError as e:
            session.transport.send(wamp.error(wamp.CALL, msg[1], e.uri, [e.message]))
            return
        session.transport.send([wamp.RESULT, msg[1], {}])

    # -- the mailbox -------------------------------------------------------------------------------
    def _get(self, session_id: int) -> Process:
        proc = self._procs.get(session_id)
        if proc is None:
            if session_id in self._stopped:
                raise ProcessError(PROCESS_FAILED, "the session's process was stopped after too many restarts")
            raise ProcessError(NO_SUCH_PROCESS, f"session {session_id} has no process")
        return proc

    def _enqueue(self, proc: Process, item: _Request) -> None:
        if len(proc.mailbox) >= proc.config.mailbox:
            raise ProcessError(PROCESS_BUSY, f"the process has {len(proc.mailbox)} requests waiting (mailbox)")
        proc.mailbox.append(item)
        if not proc.busy:
            self._run(proc)

    def _begin(self, proc: Process) -> None:
        """A fresh instance, with `init` first in its mailbox (ahead of anything waiting); the caller
        runs the mailbox. ProcessError (logged) when the class cannot even be instantiated."""
        config = proc.config
        try:
            instance = config.factory()
        except Exception as e:
            self.log.error("session process {cls} of session {sid} cannot be created: {error}\n{trace}",
                           cls=config.cls, sid=proc.session.id, error=_text(e), trace=traceback.format_exc())
            raise ProcessError(PROCESS_FAILED, f"the session process cannot be created: {_text(e)}") from None
        service = self._service(proc.session.realm_uri)
        try:
            instance.realm = RealmClient(service) if service is not None else None
            instance.session_id = proc.session.id
        except AttributeError:  # a class with __slots__ that has no room for them
            pass
        proc.instance = instance
        proc.mailbox.insert(0, _Request("init", proc.arg))

    def _run(self, proc: Process) -> None:
        """Handle waiting requests, one at a time, until one answers later (its answer runs the next)
        or none is left. A loop, not recursion: a thousand requests answered at once nest nothing."""
        if proc.looping:
            return
        proc.looping = True
        try:
            while proc.mailbox and not proc.busy and self._procs.get(proc.session.id) is proc:
                self._handle(proc, proc.mailbox.pop(0))
        finally:
            proc.looping = False

    def _handle(self, proc: Process, item: _Request) -> None:
        proc.busy = True
        proc.current = item
        generation = proc.generation
        try:
            instance = proc.instance
            if item.kind == "call":
                result = instance.handle_call(item.payload)
            elif item.kind == "cast":
                result = instance.handle_cast(item.payload)
            else:
                result = instance.init(proc.session.to_details_map(), item.payload)
            if inspect.iscoroutine(result):
                result = defer.Deferred.fromCoroutine(result)
        except Exception as e:
            self._failed(proc, generation, item, e, traceback.format_exc())
            return
        if isinstance(result, defer.Deferred):  # answered later, or at once if it has fired already
            result.addCallbacks(self._done, self._failed_later, (proc, generation, item),
                                errbackArgs=(proc, generation, item))
        else:
            self._finish(result, proc, generation, item)

    def _finish(self, result: Any, proc: Process, generation: int, item: _Request) -> None:
        _reply(item, result)
        if proc.generation == generation:  # else the process was restarted or ended meanwhile
            proc.busy = False
            proc.current = None
            proc.handled += 1

    def _done(self, result: Any, proc: Process, generation: int, item: _Request) -> None:
        self._finish(result, proc, generation, item)
        self._run(proc)

    def _failed_later(self, failure: Failure, proc: Process, generation: int, item: _Request) -> None:
        self._failed(proc, generation, item, failure.value, failure.getTraceback())
        self._run(proc)

    def _failed(self, proc: Process, generation: int, item: _Request, e: BaseException, trace: str) -> None:
        """A handler raised: the request fails, the failure is logged once with its traceback, and the
        process restarts with a fresh init, or stops after too many restarts."""
        text = _text(e)
        _fail(item, ProcessError(PROCESS_FAILED, f"the session process failed: {text}"))
        if proc.generation != generation:
            return
        session = proc.session
        self.log.error("session process {cls} of session {sid} failed in {hook}: {error}\n{trace}",
                       cls=proc.config.cls, sid=session.id, hook=_HOOKS[item.kind], error=text,
                       trace=trace[-MAX_TRACE:])
        proc.generation += 1
        proc.busy = False
        proc.current = None
        self._call_terminate(proc, f"failed: {text}")
        now = self.clock.seconds()
        config = proc.config
        recent = [t for t in proc.restarts or () if now - t < config.restart_within]
        if len(recent) >= config.restart_max:
            self._procs.pop(session.id, None)
            self._stopped.add(session.id)
            self.log.warn("session process {cls} of session {sid} stopped: it failed {n} times within {w:g}s "
                          "(restart.max {max}); then: {then}", cls=config.cls, sid=session.id, n=len(recent) + 1,
                          w=config.restart_within, max=config.restart_max, then=config.then)
            self._drain(proc, ProcessError(PROCESS_FAILED, "the session process was stopped after too many "
                                                           "restarts"))
            if config.then == "kill_session":
                self.table.kill(session.id, CLOSE_PROCESS_FAILED,
                                f"the session process failed {len(recent) + 1} times within "
                                f"{config.restart_within:g}s")
            return
        recent.append(now)
        proc.restarts = recent
        try:
            self._begin(proc)
        except ProcessError as e2:  # the class cannot even be instantiated (logged): no restart can help
            self._procs.pop(session.id, None)
            self._stopped.add(session.id)
            self._drain(proc, e2)

    def _timed_out(self, item: _Request, seconds: float) -> None:
        item.timer = None
        _fail(item, ProcessError(wamp.TIMEOUT, f"the session process did not answer within {seconds:g}s"))

    # -- endings -----------------------------------------------------------------------------------
    def _session_closed(self, session: Session, reason: str = "closed") -> None:
        self._stopped.discard(session.id)
        proc = self._procs.pop(session.id, None)
        if proc is not None:
            self._end(proc, reason)

    def _end(self, proc: Process, reason: str) -> None:
        proc.generation += 1
        error = ProcessError(NO_SUCH_PROCESS, f"the session process ended ({reason})")
        if proc.current is not None:  # its handler may still answer: nobody hears it
            _fail(proc.current, error)
            proc.current = None
        self._drain(proc, error)
        self._call_terminate(proc, reason)
        proc.instance = None

    def _drain(self, proc: Process, error: ProcessError) -> None:
        waiting, proc.mailbox = proc.mailbox, []
        for item in waiting:
            _fail(item, error)

    def _call_terminate(self, proc: Process, reason: str) -> None:
        """`terminate(reason)`; what it raises or its Deferred fails with is logged, never raised."""
        instance = proc.instance
        hook = getattr(instance, "terminate", None)
        if hook is None:
            return
        try:
            result = hook(reason)
            if inspect.iscoroutine(result):
                result = defer.Deferred.fromCoroutine(result)
        except Exception as e:
            self._terminate_failed(proc, e, traceback.format_exc())
            return
        if isinstance(result, defer.Deferred):
            result.addErrback(lambda f: self._terminate_failed(proc, f.value, f.getTraceback()))

    def _terminate_failed(self, proc: Process, e: BaseException, trace: str) -> None:
        self.log.error("session process {cls} of session {sid} failed in terminate: {error}\n{trace}",
                       cls=proc.config.cls, sid=proc.session.id, error=_text(e), trace=trace[-MAX_TRACE:])


_HOOKS = {"init": "init", "call": "handle_call", "cast": "handle_cast"}


def _tuning(config: SessionProcessConfig | None) -> tuple:
    """A class given to `start` runs with the realm's mailbox, timeout and restart settings, or the defaults."""
    c = config or SessionProcessConfig("")
    return c.start, c.mailbox, c.call_timeout, c.restart_max, c.restart_within, c.then


def _request(msg: list) -> Any:
    """The request of a courtyard.process.call/cast: its one positional argument, or its keyword
    arguments (a dict) when it has none."""
    args = msg[4] if len(msg) > 4 else []
    kwargs = msg[5] if len(msg) > 5 else {}
    if len(args) > 1 or (args and kwargs):
        raise ProcessError(wamp.INVALID_ARGUMENT, "the request is one positional argument, or keyword arguments")
    return args[0] if args else kwargs


def _reply(item: _Request, result: Any) -> None:
    d = item.deferred
    if d is not None and not d.called:
        _cancel(item)
        d.callback(result)


def _fail(item: _Request, error: ProcessError) -> None:
    d = item.deferred
    if d is not None and not d.called:
        _cancel(item)
        d.errback(error)


def _cancel(item: _Request) -> None:
    if item.timer is not None:
        if item.timer.active():
            item.timer.cancel()
        item.timer = None
