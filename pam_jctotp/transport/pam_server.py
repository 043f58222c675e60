"""The PAM socket, served by threads: a login runs on one worker from HELLO to verdict.

Why not the asyncio streams of the control socket: there every step crossed
from the loop to a worker thread and back (a futex wake-up and a loop
wake-up each, 100-300 us on a loaded 2-core VM), four to six times per
login, several times the daemon's own work (~130 us). Here a worker reads
the frame, runs the step and writes the reply itself, with plain
non-blocking socket calls.

Threads (none of them is the control socket's loop, so the PAM path never
waits behind the control plane):
- `pam-io`, an event loop of its own: accepts (root only; `max_connections`
  working connections), holds every connection that is waiting for someone (a
  person typing, a shim that has not sent its HELLO yet, argon2, the
  fail_delay). A conversation parked at a prompt for a person leaves the
  working budget for the waiting one (limits.Waiting: per requester, the
  heaviest requester's newest refused when full, a timer of its own for
  `answer_timeout`), so unanswered prompts never refuse a fresh login.
- `pam-N` (up to `workers`, started as logins need them): take ready
  connections from a queue. A worker waits
  for a frame at most INLINE_WAIT (a shim answering at once), then parks
  the connection back on pam-io; it never waits for a person, for argon2
  (its own bounded pool, queued fairly per requester: fairqueue.py) or for a
  fail_delay. So a stalled client holds no worker, and a stalled prompt only
  a descriptor and a place in the waiting budget.
- The watchdog (pam-io, every WATCH_TICK while working connections are open):
  each connection carries one deadline for what it is waiting for. A step that
  outlives the reply budget of the shim's HELLO timeout (issue 9) fails the
  call closed: VERDICT AUTHINFO_UNAVAIL is sent from pam-io, well before the
  shim's timeout, while the stuck worker finishes on its own and closes the
  conversation. A connection that found no free worker within QUEUE_WAIT
  (every worker stuck: a store or directory stalled) is failed closed the
  same way, with one log line per interval. A peer that does not send its
  HELLO or answer in time is dropped, as before.

Inline mode (`serves_inline`: local SQLite, the local directory, no group
lookup on the login path, the default install): nothing a step does can wait
on the network, and a step costs ~100 us, less than handing it to a worker
(two context switches and the GIL changing hands, ~300 us per login on a
2-core VM). So pam-io runs the steps itself and workers stay idle; every
step still has its watchdog deadline. If pam-io stalls in a step (the
database locked by another process, a stalled disk), the logins waiting
behind it (a frame in, a new connection, argon2 done) fail closed after
QUEUE_WAIT, as when every worker is stuck, with the same one log line.

The watchdog is a thread of its own (`pam-watch`), so it runs while pam-io
is in a step.

Ownership: a connection is owned by exactly one of the queue, a worker,
pam-io (parked or running it inline) or argon2; the hand-overs and the watchdog meet in
`_Conn.claim`/`expire` under the connection's lock, so a reply is never
written twice and a frame never after the fail-closed verdict.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import queue
import resource
import select
import socket
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable

from ..config import Config
from ..core.accounts import Accounts
from ..core.login import Login
from ..core.steps import (Conversation, Error, Info, Prompt, Result, SetPassword, Verdict,
                          VerifyPassword)
from ..errors import DirectoryUnavailable, ProtocolError, StoreError, StoreUnavailable
from ..directory import Directory
from ..model import LoginRequest, VerdictCode
from .. import metrics
from ..printable import printable
from . import limits, pam_wire
from .driver import SETTLE, Deadline, finish, reply_budget
from .fairqueue import FairPool, TooManyChecks
from .framing import HEADER, listen_unix, socket_peer_uid

log = logging.getLogger("jctotpd")

HELLO_TIMEOUT = 10.0     # the shim sends HELLO right after connecting
INLINE_WAIT = 0.02       # a worker waits this long for a frame, then parks the connection
QUEUE_WAIT = 0.5         # no free worker for this long: every worker is stuck, fail closed
WATCH_TICK = 0.05        # the watchdog's period while connections are open
SEND_PATIENCE = 2.0      # a frame the peer does not take in this long: it is gone
ACCEPT_BATCH = 16        # accepts per wake-up
ACCEPT_PAUSE = 1.0       # out of descriptors: stop accepting this long
RECV_SIZE = 4096
FIRST_WORKERS = 2        # started with the daemon; more as logins need them
TIMER_SLACK = 0.003      # a fail_delay's timer fires this early; the worker sleeps the rest
_UNAVAIL = pam_wire.encode_step(Verdict(VerdictCode.AUTHINFO_UNAVAIL))
_OUT_OF_FILES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)



def serves_inline(cfg: Config) -> bool:
    """Whether pam-io runs the login steps itself: only when no step can wait on
    the network (a fleet database, LDAP, or an NSS group lookup that may be sssd)."""
    return not (cfg.database or cfg.directory.is_ldap or cfg.admin_groups
                or cfg.exempt_groups)


# What a connection is waiting for (its deadline's meaning).
HELLO, ANSWER, STEP, QUEUED, ARGON2, SETTLING = ("hello", "answer", "step", "queued",
                                                   "argon2", "settling")


class PeerGone(ConnectionError):
    """The shim closed the connection."""


class _Conn:
    """One PAM connection and where its login stands."""

    __slots__ = ("sock", "fd", "buf", "lock", "due", "why", "dead", "req", "conv", "deadline",
                 "value", "error", "verdict", "ready_at", "conv_closed",
                 "reading", "send_at", "requester", "timer", "future")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.buf = bytearray()
        self.lock = threading.Lock()
        self.due: float | None = None   # the watchdog's deadline for `why`
        self.why = QUEUED
        self.dead = False               # failed closed by the watchdog: only cleanup is left
        self.req: LoginRequest | None = None
        self.conv: Conversation | None = None
        self.deadline: Deadline | None = None
        self.value: Any = None          # what the conversation is sent next
        self.error: BaseException | None = None  # or what its password check raised
        self.verdict: Verdict | None = None
        self.ready_at = 0.0
        self.conv_closed = False
        self.reading = True             # waiting for a frame (HELLO or ANSWER)
        self.send_at = 0.0              # a failure's verdict goes out then (fail_delay)
        self.requester = ""             # limits.requester(), from the HELLO
        self.timer: asyncio.TimerHandle | None = None  # answer_timeout, while waiting
        self.future: Future[Any] | None = None          # its password check

    def arm(self, why: str, due: float) -> None:
        with self.lock:
            self.why, self.due = why, due

    def claim(self) -> bool:
        """Take the connection over from a wait; False if the watchdog was first."""
        with self.lock:
            if self.dead:
                return False
            self.due = None
            return True

    def expire(self, now: float) -> str | None:
        """The watchdog's side of `claim`: what timed out, or None."""
        with self.lock:
            if self.dead or self.due is None or self.due > now:
                return None
            self.dead = True
            self.due = None
            return self.why


class PamServer:
    def __init__(self, accounts: Accounts, directory: Directory, argon2: FairPool,
                 config: Callable[[], Config], throttled: limits.Throttled,
                 workers: int) -> None:
        self.acc = accounts
        self.directory = directory
        self.argon2 = argon2
        self.config = config            # read at each use: SIGHUP swaps it
        self.throttled = throttled
        self.workers = workers
        self.plan = limits.pam_plan(resource.getrlimit(resource.RLIMIT_NOFILE)[0],
                                    config().max_connections)
        self.max_connections = self.plan.working
        self.open: set[_Conn] = set()       # every connection
        self._watched: set[_Conn] = set()   # ... but those waiting for a person
        self.waiting: limits.Waiting[_Conn] = limits.Waiting(self.plan)   # pam-io's
        self.ready: queue.SimpleQueue[_Conn | None] = queue.SimpleQueue()
        self.loop = asyncio.new_event_loop()
        self.listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []   # pam-io, then the workers
        self._watcher: threading.Thread | None = None
        self._watching = threading.Event()  # set while connections are open
        self._io_thread = 0             # pam-io's thread ident
        self._busy_since: float | None = None  # pam-io running a step inline since
        self._count_lock = threading.Lock()
        self._idle = 0                  # workers waiting for a connection
        self._closing = False
        self._delay_clamp_logged = False
        self._local = threading.local()

    # --- life cycle -----------------------------------------------------------

    def start(self, path: str) -> None:
        """Listen on `path` (created 0600: never a window) and start the threads."""
        self.serve_on(listen_unix(path))

    def serve_on(self, listener: socket.socket) -> None:
        """Start the threads on a listening socket (non-blocking): jctotpd's own, or
        the one a PAM process inherited from it (pam_processes.py)."""
        self.listener = listener
        io = threading.Thread(target=self._run_io, name="pam-io", daemon=True)
        io.start()
        self._threads.append(io)
        self._watcher = threading.Thread(target=self._run_watch, name="pam-watch", daemon=True)
        self._watcher.start()
        for _ in range(min(FIRST_WORKERS, self.workers)):
            self._spawn()

    def _spawn(self) -> None:
        """One more worker, up to `workers`: they start as logins need them (idle
        RSS), and stay."""
        with self._count_lock:
            if self._closing or len(self._threads) > self.workers:
                return
            t = threading.Thread(target=self._work, name=f"pam-{len(self._threads) - 1}",
                                 daemon=True)
            self._threads.append(t)
        t.start()

    def _run_io(self) -> None:
        self._io_thread = threading.get_ident()
        asyncio.set_event_loop(self.loop)
        assert self.listener is not None
        self.loop.add_reader(self.listener.fileno(), self._accept)
        self.loop.run_forever()

    def close(self, wait: float = 2.0) -> None:
        """Stop accepting, drop the parked connections (their shims fail closed), give
        the logins in a worker up to `wait` seconds to finish, then stop."""
        done = threading.Event()

        def stop() -> None:
            if self.listener is not None:
                self.loop.remove_reader(self.listener.fileno())
                self.listener.close()
            for conn in list(self.open):
                if conn.expire(float("inf")) in (HELLO, ANSWER):
                    self.loop.remove_reader(conn.fd)
                    self.ready.put(conn)  # a worker closes it (and its conversation)
            self.loop.stop()
            done.set()

        if self._threads and self._threads[0].is_alive():
            self.loop.call_soon_threadsafe(stop)
            done.wait(wait)
        with self._count_lock:
            self._closing = True
            workers = len(self._threads) - 1
        self._watching.set()
        for _ in range(workers):
            self.ready.put(None)
        end = time.monotonic() + wait
        for t in self._threads + ([self._watcher] if self._watcher else []):
            t.join(max(0.0, end - time.monotonic()))

    # --- pam-io: accept, park, timers, watchdog ---------------------------------

    def _accept(self) -> None:
        assert self.listener is not None
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF_FILES:
                    self.throttled.say("pam accept", f"PAM socket: accept: {exc.strerror}")
                    continue
                self.throttled.say("out of files", f"out of descriptors: {exc.strerror}; "
                                   "new connections wait (raise LimitNOFILE?)")
                self._pause_accept()
                return
            if len(self.open) - self.waiting.total >= self.max_connections:
                self.throttled.say("pam full", f"refusing PAM connections: max_connections "
                                   f"({self.max_connections}) reached (not counting "
                                   f"{self.waiting.total} waiting for a person)")
                sock.close()
                continue
            try:
                uid = socket_peer_uid(sock)
                sock.setblocking(False)
            except OSError:
                sock.close()
                continue
            if uid != 0:
                log.warning("refused PAM connection from uid %d (only root may ask)", uid)
                sock.close()
                continue
            conn = _Conn(sock)
            self.open.add(conn)
            self._watched.add(conn)
            self._watch()  # before it is served: inline, its steps may run at once
            self._queue(conn, time.monotonic())

    def _pause_accept(self) -> None:
        assert self.listener is not None
        fd = self.listener.fileno()
        self.loop.remove_reader(fd)

        def resume() -> None:
            if self.listener is not None and self.listener.fileno() == fd:
                self.loop.add_reader(fd, self._accept)
        self.loop.call_later(ACCEPT_PAUSE, resume)

    def _on_io(self) -> bool:
        return threading.get_ident() == self._io_thread

    def _queue(self, conn: _Conn, now: float) -> None:
        """Hand a ready connection on (any thread): to pam-io itself in inline mode,
        else to the workers."""
        conn.ready_at = now
        conn.arm(QUEUED, now + QUEUE_WAIT)
        if serves_inline(self.config()):
            if self._on_io() and self._busy_since is None:
                self._inline(conn)
            else:  # from argon2, or a callback inside a step: next turn of pam-io
                self.loop.call_soon_threadsafe(self._inline, conn)
            return
        self.ready.put(conn)
        if self.ready.qsize() > self._idle and len(self._threads) <= self.workers:
            self._spawn()

    def _park_io(self, conn: _Conn) -> None:
        """pam-io: wait until the peer's frame is readable (the deadline is armed). A
        prompt waits for a person: in the waiting budget, on a timer of its own."""
        if conn.dead:  # the watchdog was first: the worker cleans up
            return
        if conn.why == ANSWER:
            refused, why = self.waiting.park(conn.requester, conn)
            if refused is not None:
                self._refuse_waiting(refused, why)
                if refused is conn:
                    return
            self._watched.discard(conn)
            assert conn.due is not None
            conn.timer = self.loop.call_later(max(0.0, conn.due - time.monotonic()),
                                              self._answer_late, conn)
        self.loop.add_reader(conn.fd, self._readable, conn)
        self._watch()

    def _readable(self, conn: _Conn) -> None:
        self.loop.remove_reader(conn.fd)
        self._unwait(conn)
        if conn.claim():
            self._queue(conn, time.monotonic())

    def _unwait(self, conn: _Conn) -> None:
        """pam-io: the conversation no longer waits for a person (answered, or ended)."""
        if conn.timer is not None:
            conn.timer.cancel()
            conn.timer = None
        if self.waiting.remove(conn.requester, conn) and not conn.dead:
            self._watched.add(conn)
            self._watch()

    def _answer_late(self, conn: _Conn) -> None:
        """pam-io: nobody answered the prompt within answer_timeout."""
        conn.timer = None
        if conn.expire(float("inf")) is not None:
            self.throttled.say("pam answer", f"PAM prompt not answered within "
                               f"{self.config().answer_timeout} s: conversation closed",
                               logging.INFO)
            self._drop(conn)

    def _refuse_waiting(self, conn: _Conn, why: str) -> None:
        """pam-io: a waiting conversation over its budget fails closed (the shim sees
        it once its person answers). Closed on pam-io's next turn: the caller may be
        in the middle of serving a login."""
        if conn.expire(float("inf")) is None:
            return
        self._last_word(conn)
        self.throttled.say("pam waiting", f"PAM conversation waiting for a person refused "
                           f"(it fails closed): {printable(why)}")
        self.loop.call_soon(self._drop, conn)

    def _later(self, conn: _Conn, delay: float) -> None:
        """pam-io: a delayed verdict (fail_delay) goes back to a worker when due."""
        self.loop.call_later(delay, lambda: self._queue(conn, time.monotonic()))

    def _drop(self, conn: _Conn) -> None:
        """pam-io: a parked connection the watchdog failed: stop watching it, and let
        its owner-to-be close it (and its conversation)."""
        self.loop.remove_reader(conn.fd)
        self._unwait(conn)
        if serves_inline(self.config()):
            self._inline(conn)
        else:
            self.ready.put(conn)

    # --- pam-watch: the watchdog --------------------------------------------------

    def _watch(self) -> None:
        if not self._watching.is_set():
            self._watching.set()

    def _run_watch(self) -> None:
        while not self._closing:
            self._watching.wait()
            if self._closing:
                return
            time.sleep(WATCH_TICK)
            self._tick(time.monotonic())
            if not self._watched and not self._closing:
                self._watching.clear()
                if self._watched or self._closing:  # one came, or close() began, meanwhile
                    self._watching.set()

    def _tick(self, now: float) -> None:
        for conn in list(self._watched):  # (those waiting for a person have their timers)
            if conn.due is not None and conn.due <= now:
                why = conn.expire(now)
                if why is not None:
                    self._expired(conn, why)
        busy = self._busy_since
        if busy is not None and now - busy > QUEUE_WAIT:
            self._stalled()

    def _stalled(self) -> None:
        """pam-io has been in one step longer than QUEUE_WAIT: the logins waiting for
        it (their frame in, or not yet accepted) fail closed now, as when every
        worker is stuck. Those waiting for a person wait on."""
        waiting = [c for c in list(self.open) if c.why in (HELLO, ANSWER) and c.due is not None]
        poll = select.poll()
        for conn in waiting:
            poll.register(conn.fd, select.POLLIN)
        ready = {fd for fd, _ in poll.poll(0)}
        failed = 0
        for conn in waiting:
            if conn.fd in ready and conn.expire(float("inf")) is not None:
                self._last_word(conn)
                self.loop.call_soon_threadsafe(self._drop, conn)
                failed += 1
        failed += self._refuse_backlog()
        if failed:
            self._say_no_worker()

    def _refuse_backlog(self) -> int:
        """Accept what waits in the listen backlog and fail it closed (pam-watch, while
        pam-io is stalled; both accept without blocking, so each takes its own)."""
        refused = 0
        if self.listener is None:
            return refused
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = self.listener.accept()
            except OSError:
                break
            with sock:
                try:
                    if socket_peer_uid(sock) == 0:
                        sock.send(_UNAVAIL)
                except OSError:
                    pass
            refused += 1
        return refused

    def _say_no_worker(self) -> None:
        self.throttled.say("pam workers", f"PAM call failed closed: no free worker for "
                           f"{QUEUE_WAIT:.1f}s (all {self.workers} busy: store or "
                           "directory unresponsive?)")

    def _expired(self, conn: _Conn, why: str) -> None:
        """pam-watch: what a missed deadline means. The verdict goes out from here; the
        connection is closed by whoever owns it (a worker or pam-io, after its step)."""
        if why in (HELLO, ANSWER):
            log.warning("PAM peer timed out")
            self.loop.call_soon_threadsafe(self._drop, conn)
            return
        if why == SETTLING:
            log.error("after a verdict: Login.run took longer than %.1fs (its audit event "
                      "may be missing)", SETTLE)
            return
        metrics.watchdog(why)
        if why == QUEUED:
            self._say_no_worker()
        else:
            if why == ARGON2 and conn.future is not None:
                conn.future.cancel()  # still queued: never run it
            seconds = conn.deadline.seconds if conn.deadline else 0.0
            log.error("PAM call failed closed: a step stalled (%s took longer than %.1fs; "
                      "store or directory unresponsive?)",
                      "password check" if why == ARGON2 else "Login.run", seconds)
        self._last_word(conn)

    @staticmethod
    def _last_word(conn: _Conn) -> None:
        """VERDICT AUTHINFO_UNAVAIL, then no more (the shim fails closed at once)."""
        try:
            conn.sock.send(_UNAVAIL)
        except OSError:
            pass
        try:
            conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # --- workers ----------------------------------------------------------------

    def _work(self) -> None:
        self._local.poll = select.poll()
        while True:
            with self._count_lock:
                self._idle += 1
            conn = self.ready.get()
            with self._count_lock:
                self._idle -= 1
            if conn is None:
                return
            self._run(conn)

    def _inline(self, conn: _Conn) -> None:
        """pam-io runs the login's next steps itself (inline mode), under the watchdog."""
        self._busy_since = time.monotonic()
        try:
            self._run(conn)
        finally:
            self._busy_since = None

    def _run(self, conn: _Conn) -> None:
        """Take a ready connection over and serve it until it parks or ends."""
        if not conn.claim():
            self._close(conn)
            return
        try:
            if self._serve(conn):
                self._close(conn)
        except Exception as exc:  # every fault fails the call closed
            if not conn.dead:  # else the watchdog already answered (and logged) it
                self._fail(conn, exc)
            self._close(conn)

    def _serve(self, conn: _Conn) -> bool:
        """Run the login until it waits for someone (False: parked) or ends (True)."""
        while True:
            if conn.reading:
                payload = self._read_frame(conn)
                if payload is None:
                    return False
                conn.reading = False
                if conn.req is None:
                    self._hello(conn, payload)
                else:
                    conn.value = pam_wire.parse_answer(pam_wire.decode(payload))
                    assert conn.deadline is not None
                    conn.deadline.at = conn.ready_at + conn.deadline.seconds
            if conn.verdict is not None:  # back from its fail_delay
                self._until(conn)
                return self._settle(conn)
            if conn.error is not None:
                raise conn.error
            step = self._run_step(conn)
            if step is None:  # the watchdog answered for it
                return True
            if isinstance(step, Verdict):
                if not self._verdict(conn, step):
                    return False
                self._until(conn)
                return self._settle(conn)
            if isinstance(step, Prompt):
                self._send(conn, pam_wire.encode_step(step))
                conn.reading = True
                conn.ready_at = time.monotonic()  # (an answer already there came about now)
            elif isinstance(step, (Info, Error)):
                self._send(conn, pam_wire.encode_step(step))
            elif isinstance(step, (VerifyPassword, SetPassword)):
                self._to_argon2(conn, step)
                return False
            elif isinstance(step, Result):
                raise TypeError("a login ended with a control result")
            else:
                raise TypeError(f"unknown conversation step {type(step).__name__}")

    def _hello(self, conn: _Conn, payload: bytes) -> None:
        req = conn.req = pam_wire.parse_hello(pam_wire.decode(payload))
        conn.requester = limits.requester(req.rhost, req.uid)
        conn.deadline = Deadline(reply_budget(req.timeout))
        conn.deadline.at = conn.ready_at + conn.deadline.seconds
        conn.conv = Login(self.acc, req).run()

    def _run_step(self, conn: _Conn) -> Any:
        """The conversation's next step, under the watchdog; None if it came too late."""
        assert conn.conv is not None and conn.deadline is not None
        conn.arm(STEP, conn.deadline.at)
        value, conn.value = conn.value, None
        try:
            step = conn.conv.send(value)
        except StopIteration:
            raise RuntimeError("conversation ended without a verdict") from None
        finally:
            late = not conn.claim()
        return None if late else step

    def _to_argon2(self, conn: _Conn, step: VerifyPassword | SetPassword) -> None:
        """Password checks run in their bounded pool; the connection waits there."""
        assert conn.deadline is not None
        conn.arm(ARGON2, conn.deadline.at)
        future: Future[Any]
        if isinstance(step, VerifyPassword):
            future = self.argon2.submit(conn.requester, self.directory.verify_password,
                                        step.user, step.password)
        else:
            future = self.argon2.submit(conn.requester, self.directory.set_password,
                                        step.user, step.password, step.old)
        conn.future = future

        def done(f: Future[Any]) -> None:
            conn.future = None
            if not conn.claim():
                self.ready.put(conn)  # failed closed meanwhile: a worker cleans up
                return
            conn.error = f.exception()
            if conn.error is None:
                conn.value = f.result()
            elif isinstance(conn.error, TooManyChecks):
                # Refused as a failed login is: after the fail_delay, so that one
                # source's refused conversations come no faster than its failed ones.
                assert conn.deadline is not None
                wait = self._fail_delay(conn.deadline)
                if wait > 0:
                    self.loop.call_soon_threadsafe(self._later, conn, wait)
                    return
            self._queue(conn, time.monotonic())
        future.add_done_callback(done)

    def _verdict(self, conn: _Conn, verdict: Verdict) -> bool:
        """Log the verdict and send it, after the fail_delay (False: waiting for it)."""
        req, deadline = conn.req, conn.deadline
        assert req is not None and deadline is not None
        conn.verdict = verdict
        if verdict.delay:
            wait = self._fail_delay(deadline)
            conn.send_at = time.monotonic() + wait
            if self._on_io() and wait > 0:
                self._later(conn, wait)  # inline: no hand-over to allow for
                return False
            if wait > TIMER_SLACK:
                # pam-io's timer wakes us a little early (its clock has ms ticks, and
                # the hand-over to a worker takes time); _serve sleeps the rest.
                self.loop.call_soon_threadsafe(self._later, conn, wait - TIMER_SLACK)
                return False
        return True

    @staticmethod
    def _until(conn: _Conn) -> None:
        """The last moments of a fail_delay (at most TIMER_SLACK and the queue's wait)."""
        rest = conn.send_at - time.monotonic()
        if rest > 0:
            time.sleep(rest)

    def _fail_delay(self, deadline: Deadline) -> float:
        """Every failure takes fail_delay from the last answer, whatever it cost to
        decide (unknown users and wrong factors look the same), but never reaches
        the shim's timeout: a late verdict would count as "daemon unavailable"."""
        fail_delay = self.config().fail_delay
        wait = deadline.at - deadline.seconds + fail_delay - time.monotonic()
        if wait > deadline.left():
            if not self._delay_clamp_logged:
                log.warning("fail_delay %.1fs is not below the PAM timeout budget %.1fs: "
                            "failures are answered sooner", fail_delay, deadline.seconds)
                self._delay_clamp_logged = True
            wait = deadline.left()
        return wait

    def _settle(self, conn: _Conn) -> bool:
        """Deliver the verdict, then tell the conversation whether it arrived."""
        req, verdict = conn.req, conn.verdict
        assert req is not None and verdict is not None and conn.conv is not None
        # Logged before it is sent: once PAM has its answer, the line is in the log.
        # IGNORE (an unknown user let through by config: root's su, cron) is
        # routine; at warning it would bury the refusals in `journalctl -p warning`.
        routine = verdict.code in (VerdictCode.SUCCESS, VerdictCode.IGNORE)
        if conn.deadline is not None:
            metrics.login(req.call, verdict.code, time.monotonic() - conn.deadline.at
                          + conn.deadline.seconds)
        log.log(logging.INFO if routine else logging.WARNING,
                "%s %s user=%s service=%s rhost=%s -> %s", req.call, req.factors,
                printable(req.user), printable(req.service), printable(req.rhost or "-"),
                verdict.code)
        # A shim that is gone makes the send fail (EPIPE: a Unix socket's peer
        # closed); no peek for end-of-file first, that was a syscall per login.
        try:
            self._send(conn, pam_wire.encode_step(verdict, acct_hint=req.acct_hint))
            delivered = True
        except (ConnectionError, TimeoutError):
            delivered = False
        if not delivered:
            log.warning("user=%s service=%s: the shim was gone before the verdict %s "
                        "reached it (PAM refused the login)", printable(req.user),
                        printable(req.service), verdict.code)
        conn.arm(SETTLING, time.monotonic() + SETTLE)
        conn.conv_closed = True
        try:
            after = finish(conn.conv, delivered)
        except Exception:
            log.exception("after a verdict (its audit event may be missing)")
            after = None
        finally:
            conn.claim()
        if after is not None:
            log.error("a conversation went on after its verdict (%s)", type(after).__name__)
        return True

    # --- frames -------------------------------------------------------------------

    def _read_frame(self, conn: _Conn) -> bytes | None:
        """The next frame's payload, or None: not here within INLINE_WAIT (at once
        when other logins are waiting for a worker), so the connection is parked
        on pam-io (its deadline armed) until it is readable."""
        buf = conn.buf
        waited = False
        while True:
            if len(buf) >= HEADER.size:
                length = pam_wire.check_length(HEADER.unpack_from(buf)[0])
                end = HEADER.size + length
                if len(buf) >= end:
                    payload = bytes(buf[HEADER.size:end])
                    del buf[:end]
                    return payload
            try:
                data = conn.sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                # Wait for a prompt peer only while no other login is ready to run
                # (pam-io never waits: the others' frames are its to serve).
                if waited or self._on_io() or not self.ready.empty() \
                        or not self._wait(conn.fd, select.POLLIN, INLINE_WAIT):
                    self._park(conn)
                    return None
                waited = True
                conn.ready_at = time.monotonic()  # it came now: budget, fail_delay from here
                continue
            if not data:
                raise PeerGone("the peer closed the connection")
            buf += data

    def _park(self, conn: _Conn) -> None:
        if conn.req is None:
            conn.arm(HELLO, conn.ready_at + HELLO_TIMEOUT)
        else:
            conn.arm(ANSWER, time.monotonic() + self.config().answer_timeout)
        if self._on_io():
            self._park_io(conn)
        else:
            self.loop.call_soon_threadsafe(self._park_io, conn)

    def _wait(self, fd: int, events: int, seconds: float) -> bool:
        poll: select.poll | None = getattr(self._local, "poll", None)
        if poll is None:
            poll = self._local.poll = select.poll()
        poll.register(fd, events)
        try:
            return bool(poll.poll(seconds * 1000))
        finally:
            poll.unregister(fd)

    def _send(self, conn: _Conn, data: bytes) -> None:
        view = memoryview(data)
        give_up = None
        while view:
            try:
                view = view[conn.sock.send(view):]
                continue
            except (BlockingIOError, InterruptedError):
                pass
            now = time.monotonic()
            give_up = give_up or now + SEND_PATIENCE
            if now >= give_up:
                raise TimeoutError("the shim does not read its frames")
            self._wait(conn.fd, select.POLLOUT, give_up - now)

    # --- the end of a connection --------------------------------------------------

    def _fail(self, conn: _Conn, exc: Exception) -> None:
        """A fault in a worker: one log line, and the call fails closed."""
        unavail = True
        if isinstance(exc, ProtocolError):
            log.warning("PAM peer broke the protocol: %s", exc)
        elif isinstance(exc, ConnectionError):
            log.info("PAM peer left before the verdict (login abandoned)")
            unavail = False
        elif isinstance(exc, TimeoutError):
            log.warning("PAM peer timed out")
            unavail = False
        elif isinstance(exc, StoreError):
            if not isinstance(exc, StoreUnavailable):  # an outage is logged once, by the store
                log.error("PAM call failed closed: %s", exc)
        elif isinstance(exc, TooManyChecks):
            pass  # the queue said so, once per interval
        elif isinstance(exc, DirectoryUnavailable):
            # Fail closed; the directory logged the outage once, each login only this.
            log.warning("PAM call failed closed: the directory is unavailable")
        else:
            log.error("internal error during a PAM call; failing it closed", exc_info=exc)
        if unavail and conn.verdict is None and conn.claim():
            self._last_word(conn)

    def _close(self, conn: _Conn) -> None:
        """Close the socket and, if it never reached its verdict, the conversation
        (it audits the abandoned login: in this worker, like every step)."""
        try:
            conn.sock.close()
        finally:
            self.open.discard(conn)
            self._watched.discard(conn)
            if conn.conv is not None and not conn.conv_closed:
                conn.conv_closed = True
                try:
                    conn.conv.close()
                except Exception:
                    log.exception("closing an abandoned login")

