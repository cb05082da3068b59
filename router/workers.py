"""`courtyard start --workers N`: N router processes on every core of one machine, as one cluster.

The parent is a small supervisor, not a router: it runs `courtyard start` again N times with a hidden
`--worker-index i`, and each worker is a cluster node (`<node_id>-w<i>`) on the configured Redis that
binds every listener's host and port with SO_REUSEPORT (router/transport/listen.py), so the kernel
spreads connections over the workers. The supervisor
- stops everything if a worker exits before it ever served (Redis unreachable, a port held by another
  program: restarting cannot help), with the worker's exit code, as a single node would exit;
- restarts a worker that exits after it served, after a backoff (0.1 s, doubling, at most 5 s); one
  that exits `MAX_QUICK_EXITS` times in a row, each within `QUICK` seconds of its start, stops
  everything (one line on stderr, exit 1): a worker that cannot live is not restarted for ever;
- on SIGTERM or SIGINT, sends SIGTERM to every worker (each says GOODBYE `wamp.close.system_shutdown`
  to its clients and leaves the cluster), waits for them (bounded: SIGKILL after the grace period and
  a margin) and exits 0.

A worker tells the supervisor it is serving by writing a line on fd 3 (a pipe the supervisor reads);
it ignores SIGINT (a terminal's Ctrl-C reaches the whole process group: the supervisor alone decides),
and stops by itself if its supervisor goes (kill -9), so no worker outlives it. A restarted worker
first removes what its dead predecessor left in Redis under the same node id (its key, registrations,
subscriptions and sessions; `wamp.session.on_leave` and testaments to the cluster), before it listens:
survivors would never purge it, because the id is alive again.
"""

from __future__ import annotations

import os
import stat
import sys
import time
from typing import Any

from twisted.internet import defer, error, protocol, reactor, task
from twisted.logger import Logger

READY_FD = 3  # the worker's end of its readiness pipe
MAX_QUICK_EXITS = 3  # exits in a row, each within QUICK seconds of the start, before giving up
QUICK = 10.0
BACKOFF, MAX_BACKOFF = 0.1, 5.0  # seconds before a restart: BACKOFF doubled per quick exit in a row
KILL_MARGIN = 10.0  # seconds past the grace period before a worker that does not stop is killed

log = Logger(namespace="router.workers")


def worker_id(index: int) -> str:
    return f"w{index}"


class _Worker(protocol.ProcessProtocol):
    """One worker process, as the supervisor sees it."""

    def __init__(self, supervisor: Supervisor, index: int, restarted: bool) -> None:
        self.supervisor = supervisor
        self.index = index
        self.restarted = restarted
        self.started = time.monotonic()
        self.pid: int | None = None
        self.ready = False
        self.ended: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.pid = self.transport.pid

    def childDataReceived(self, fd: int, data: bytes) -> None:
        if fd == READY_FD and not self.ready and b"ready" in data:
            self.ready = True
            self.supervisor.worker_ready(self)

    def processEnded(self, reason: Any) -> None:
        self.supervisor.worker_ended(self, reason.value.exitCode, reason.value.signal)
        self.ended.callback(None)


class Supervisor:
    """Starts, restarts and stops the workers; `code` is the exit status once the reactor stops."""

    def __init__(self, argv: list[str], count: int, grace: float) -> None:
        self.argv = argv  # `python -m router.cli start …` without the worker flags
        self.count = count
        self.grace = grace
        self.workers: dict[int, _Worker] = {}
        self.quick_exits: dict[int, int] = dict.fromkeys(range(count), 0)
        self.restarts: dict[int, Any] = {}  # index → the pending callLater
        self.stopping = False
        self.all_ready = False
        self.code = 0

    def start(self) -> None:
        log.info("starting {n} workers", n=self.count)
        for i in range(self.count):
            self._spawn(i, restart=False)

    def _spawn(self, index: int, restart: bool) -> None:
        self.restarts.pop(index, None)
        worker = _Worker(self, index, restart)
        argv = [*self.argv, "--worker-index", str(index), *(("--worker-restart",) if restart else ())]
        try:
            reactor.spawnProcess(worker, sys.executable, argv, env=os.environ,
                                 childFDs={0: 0, 1: 1, 2: 2, READY_FD: "r"})
        except OSError as e:  # out of processes or file descriptors: nothing sensible to retry
            self._give_up(f"cannot start worker {worker_id(index)}: {e}")
            return
        self.workers[index] = worker

    def worker_ready(self, worker: _Worker) -> None:
        log.info("worker {id} started (pid {pid})", id=worker_id(worker.index), pid=worker.pid)
        if not self.all_ready and all(w.ready for w in self.workers.values()) and len(self.workers) == self.count:
            self.all_ready = True
            log.info("all {n} workers serving", n=self.count)
            if self.ready is not None:
                self.ready()

    def worker_ended(self, worker: _Worker, code: int | None, sig: int | None) -> None:
        how = f"was killed by signal {sig}" if sig is not None else f"exited with code {code}"
        wid = worker_id(worker.index)
        if self.workers.get(worker.index) is worker:
            del self.workers[worker.index]
        if self.stopping:
            log.info("worker {id} (pid {pid}) {how}", id=wid, pid=worker.pid, how=how)
            return
        if not worker.ready and not worker.restarted:  # never served: a config, Redis or port problem
            self._give_up(f"worker {wid} {how} before it served", code or 1)
            return
        lived = time.monotonic() - worker.started
        quick = self.quick_exits[worker.index] = self.quick_exits[worker.index] + 1 if lived < QUICK else 1
        if quick >= MAX_QUICK_EXITS:
            self._give_up(f"worker {wid} {how}, {quick} times in a row within {QUICK:g} s of its start")
            return
        delay = min(MAX_BACKOFF, BACKOFF * 2 ** (quick - 1))
        log.warn("worker {id} (pid {pid}) {how} after {lived:.1f} s: restarting it in {delay:g} s", id=wid,
                 pid=worker.pid, how=how, lived=lived, delay=delay)
        self.restarts[worker.index] = reactor.callLater(delay, self._spawn, worker.index, True)

    def _give_up(self, why: str, code: int = 1) -> None:
        """Stop every worker (gracefully, as on SIGTERM) and exit with `code`, saying why on stderr."""
        self.code = code
        log.critical("{why}: stopping every worker", why=why)
        print(f"courtyard: {why}: stopping every worker", file=sys.stderr, flush=True)
        if not self.stopping:
            self.stopping = True  # no restart from here on
            reactor.stop()

    ready: Any = None  # called once every worker serves

    def reload(self) -> None:
        log.info("SIGHUP: each worker reloads the config")
        for w in list(self.workers.values()):
            self._signal(w, "HUP")

    @defer.inlineCallbacks
    def stop(self):
        """SIGTERM to every worker, then wait for them; SIGKILL to any still there after the grace
        period and a margin (each worker waits `shutdown.grace_period` for its clients' GOODBYEs)."""
        self.stopping = True
        for call in self.restarts.values():
            if call.active():
                call.cancel()
        self.restarts.clear()
        workers = list(self.workers.values())
        if workers:
            log.info("stopping {n} workers", n=len(workers))
        for w in workers:
            self._signal(w, "TERM")
        waiting = defer.DeferredList([w.ended for w in workers])
        timer = reactor.callLater(self.grace + KILL_MARGIN, self._kill, workers)
        yield waiting
        if timer.active():
            timer.cancel()
        log.info("every worker stopped")

    def _kill(self, workers: list[_Worker]) -> None:
        left = [w for w in workers if not w.ended.called]
        log.warn("{n} workers still running {t:g} s after SIGTERM: SIGKILL", n=len(left), t=self.grace + KILL_MARGIN)
        for w in left:
            self._signal(w, "KILL")

    @staticmethod
    def _signal(worker: _Worker, name: str) -> None:
        if worker.ended.called:
            return
        try:
            worker.transport.signalProcess(name)
        except error.ProcessExitedAlready:  # its processEnded is on its way
            pass


def supervise(argv: list[str], count: int, grace: float, ready: Any = None) -> int:
    """Run the supervisor until SIGTERM/SIGINT (0) or a worker that cannot live (1). SIGHUP goes on to
    every worker (each reloads itself, router/reload.py); `ready()` once all serve (pid file, sd_notify)."""
    import signal

    supervisor = Supervisor(argv, count, grace)
    supervisor.ready = ready
    signal.signal(signal.SIGHUP, lambda signum, frame: reactor.callFromThread(supervisor.reload))
    reactor.callWhenRunning(supervisor.start)
    reactor.addSystemEventTrigger("before", "shutdown", supervisor.stop)
    reactor.run()
    return supervisor.code


# -- in the worker ---------------------------------------------------------------------------------
def worker_started() -> None:
    """Tell the supervisor this worker serves (a line on its readiness pipe), and stop if the
    supervisor goes. (SIGINT is ignored from the worker's start on: router/cli.py.)"""
    try:
        if not stat.S_ISFIFO(os.fstat(READY_FD).st_mode):  # started by hand: fd 3 is something else
            raise OSError(0, "no readiness pipe")
        os.write(READY_FD, b"ready\n")
        os.close(READY_FD)
    except OSError as e:
        log.warn("no supervisor to tell this worker started: {e}", e=e.strerror)
    parent = os.getppid()

    def watch() -> None:
        if os.getppid() != parent:
            log.warn("the supervisor (pid {pid}) is gone: stopping", pid=parent)
            watcher.stop()
            reactor.stop()

    watcher = task.LoopingCall(watch)
    watcher.start(1.0, now=False)


@defer.inlineCallbacks
def purge_predecessor(node: Any):
    """Before a restarted worker listens: its dead predecessor's node key and sessions go (the
    supervisor saw it exit, so it is dead for sure), and the cluster hears them leave."""
    from router.cluster.membership import node_key
    from router.cluster.purge import LEFT, NODE_DOWN, Purger, claim_key

    node_id = node.config.cluster.node_id
    yield node.redis.delete(node_key(node_id))
    yield node.redis.delete(claim_key(node_id))  # a purge of an earlier predecessor holds no claim now
    # Its registrations and subscriptions first, each part as on a graceful stop of the same id (this
    # worker has none yet): the purge below deletes the index they are found by, so after it the
    # predecessor's callees would stay in Redis for good (procedure_already_exists to its clients).
    for part in node.cluster_parts:
        yield part.stop()
    # As a survivor would: the leavers (this node publishes their on_leave and testaments, routed to
    # every node), then NODE_DOWN so the others forget the predecessor's subscriptions before this
    # worker, listening, announces its own.
    purger = Purger(node.redis, node_id, claim_ttl=max(10.0, 3 * node.config.cluster.node_timeout),
                    announce=lambda leavers: node.bus.broadcast(LEFT, leavers),
                    gone=lambda dead: node.bus.broadcast(NODE_DOWN, dead))
    yield purger.purge(node_id)  # logs how many sessions it removed
    yield node.redis.delete(claim_key(node_id))  # the id is alive again: nothing left to claim
