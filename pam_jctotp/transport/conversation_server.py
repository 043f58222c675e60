"""One conversation server for every socket of jctotpd (issue 19).

A channel (channel.py) says what is particular to a socket: who may
connect, the codec, how a conversation starts, the reply budget, the last
words. This module does the rest, the same way for the PAM socket
(pam_server.py) and the control socket (control_server.py).

Why threads and not asyncio streams: with streams every step crossed from
the loop to a worker thread and back (a futex wake-up and a loop wake-up
each, 100-300 us on a loaded 2-core VM), four to six times per login,
several times the daemon's own work (~130 us). Here a worker reads the
frame, runs the step and writes the reply itself, with plain non-blocking
socket calls.

Threads, per socket (so the PAM path never waits behind the control plane):
- `<name>-io`, an event loop of its own: accepts (the channel admits, before
  anything is read), holds every connection that is waiting for someone (a
  person typing, a peer that has not sent its first frame yet, argon2, the
  fail_delay). A conversation parked at a prompt for a person leaves the
  working budget (the channel's `waiting`, when it has one: limits.Waiting)
  and has a timer of its own for the channel's answer timeout.
- `<name>-N` (up to `channel.workers`, started as needed): take ready
  connections from a queue. A worker waits for a frame at most INLINE_WAIT
  (a peer answering at once), then parks the connection back on the io
  thread; it never waits for a person, for argon2 (its own bounded pool,
  queued fairly per requester: fairqueue.py) or for a fail_delay.
- `<name>-watch`, the watchdog (every WATCH_TICK while connections are
  open): each connection carries one deadline for what it is waiting for. A
  step that outlives the channel's reply budget is answered by the
  channel's fail-closed word, well before the peer's own timeout, while the
  stuck worker finishes on its own and closes the conversation. A
  connection that found no free worker within QUEUE_WAIT is answered the
  same way, with one log line per interval. A peer that does not send its
  frame in time is dropped.

Inline mode (`channel.serves_inline()`: local SQLite, the local directory,
no group lookup; the PAM socket of the default install): nothing a step
does can wait on the network, and a step costs ~100 us, less than handing
it to a worker. So the io thread runs the steps itself, each still under
the watchdog; if it stalls in one, the connections waiting behind it fail
closed after QUEUE_WAIT, with the same one log line.

Here: the life cycle, the accept loop and the io thread's parking; the
watchdog is watchdog.py, the workers' side worker.py (mixins of this class).
Ownership: connection.py (`Conn.claim`/`expire`).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import queue
import socket
import threading
import time

from ..directory import Directory
from .channel import Channel
from .connection import ANSWER, HELLO, QUEUED, Conn
from .fairqueue import FairPool
from .framing import socket_peer_uid
from .watchdog import QUEUE_WAIT, Watchdog
from .worker import Worker

__all__ = ["QUEUE_WAIT", "ConversationServer"]

log = logging.getLogger("jctotpd")

ACCEPT_PAUSE = 1.0       # out of descriptors: stop accepting this long
FIRST_WORKERS = 2        # started with the server; more as conversations need them
OUT_OF_FILES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class ConversationServer(Watchdog, Worker):
    """Serves one listening socket through `channel`."""

    def __init__(self, channel: Channel, directory: Directory, argon2: FairPool) -> None:
        self.channel = channel
        self.directory = directory
        self.argon2 = argon2
        self.throttled = channel.throttled
        self.workers = channel.workers
        self.open: set[Conn] = set()        # every connection
        self._watched: set[Conn] = set()    # ... but those waiting for a person
        self.ready: queue.SimpleQueue[Conn | None] = queue.SimpleQueue()
        self.loop = asyncio.new_event_loop()
        self.listener: socket.socket | None = None
        self._threads: list[threading.Thread] = []   # the io thread, then the workers
        self._watcher: threading.Thread | None = None
        self._watching = threading.Event()  # set while connections are open
        self._io_thread = 0
        self._busy_since: float | None = None  # the io thread running a step inline since
        self._count_lock = threading.Lock()
        self._idle = 0                  # workers waiting for a connection
        self._closing = False
        self._delay_clamp_logged = False
        self._local = threading.local()

    @property
    def waiting_total(self) -> int:
        return self.channel.waiting.total if self.channel.waiting is not None else 0

    # --- life cycle -----------------------------------------------------------

    def serve_on(self, listener: socket.socket) -> None:
        """Start the threads on a listening socket (non-blocking)."""
        self.listener = listener
        name = self.channel.thread
        io = threading.Thread(target=self._run_io, name=f"{name}-io", daemon=True)
        io.start()
        self._threads.append(io)
        self._watcher = threading.Thread(target=self._run_watch, name=f"{name}-watch",
                                         daemon=True)
        self._watcher.start()
        for _ in range(min(FIRST_WORKERS, self.workers)):
            self._spawn()

    def _spawn(self) -> None:
        """One more worker, up to `workers`: they start as needed (idle RSS), and stay."""
        with self._count_lock:
            if self._closing or len(self._threads) > self.workers:
                return
            t = threading.Thread(target=self._work, daemon=True,
                                 name=f"{self.channel.thread}-{len(self._threads) - 1}")
            self._threads.append(t)
        t.start()

    def _run_io(self) -> None:
        self._io_thread = threading.get_ident()
        asyncio.set_event_loop(self.loop)
        assert self.listener is not None
        self.loop.add_reader(self.listener.fileno(), self._accept)
        self.loop.run_forever()

    def close(self, wait: float = 2.0) -> None:
        """Stop accepting, drop the parked connections (their peers fail closed), give
        the conversations in a worker up to `wait` seconds to finish, then stop."""
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

    # --- the io thread: accept, park, timers ------------------------------------

    def _accept(self) -> None:
        assert self.listener is not None
        for _ in range(self.channel.accept_batch):
            try:
                sock, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno not in OUT_OF_FILES:  # ECONNABORTED and the like: that one only
                    self.throttled.say((self.channel.name, "accept"),
                                       f"{self.channel.name} socket: accept: {exc.strerror}")
                    continue
                self.throttled.say("out of files", f"out of descriptors: {exc.strerror}; "
                                   "new connections wait (raise LimitNOFILE?)")
                self._pause_accept()
                return
            try:
                uid = socket_peer_uid(sock)
                sock.setblocking(False)
            except OSError:
                sock.close()
                continue
            if not self.channel.admit(sock, uid, len(self.open) - self.waiting_total):
                continue
            conn = Conn(sock, uid)
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

    def _queue(self, conn: Conn, now: float) -> None:
        """Hand a ready connection on (any thread): to the io thread itself in inline
        mode, else to the workers."""
        conn.ready_at = now
        conn.arm(QUEUED, now + QUEUE_WAIT)
        if self.channel.serves_inline():
            if self._on_io() and self._busy_since is None:
                self._inline(conn)
            else:  # from argon2, or a callback inside a step: next turn of the io thread
                self.loop.call_soon_threadsafe(self._inline, conn)
            return
        self.ready.put(conn)
        if self.ready.qsize() > self._idle and len(self._threads) <= self.workers:
            self._spawn()

    def _park_io(self, conn: Conn) -> None:
        """io thread: wait until the peer's frame is readable (the deadline is armed).
        A prompt waits for a person: in the waiting budget, on a timer of its own."""
        if conn.dead:  # the watchdog was first: the worker cleans up
            return
        if conn.why == ANSWER:
            waiting = self.channel.waiting
            if waiting is not None:
                refused, why = waiting.park(conn.requester, conn)
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

    def _readable(self, conn: Conn) -> None:
        self.loop.remove_reader(conn.fd)
        self._unwait(conn)
        if conn.claim():
            self._queue(conn, time.monotonic())

    def _unwait(self, conn: Conn) -> None:
        """io thread: the conversation no longer waits for a person (answered, ended)."""
        timer, conn.timer = conn.timer, None
        timed = timer is not None
        if timer is not None:
            timer.cancel()
        waiting = self.channel.waiting
        if waiting is not None:
            timed = waiting.remove(conn.requester, conn)
        if timed and not conn.dead:
            self._watched.add(conn)
            self._watch()

    def _answer_late(self, conn: Conn) -> None:
        """io thread: nobody answered the prompt within the answer timeout."""
        conn.timer = None
        if conn.expire(float("inf")) is not None:
            name = self.channel.name
            self.throttled.say((name, "answer"), f"{name} prompt not answered within "
                               f"{self.channel.answer_timeout(conn):g} s: conversation closed",
                               logging.INFO)
            self._drop(conn)

    def _refuse_waiting(self, conn: Conn, why: str) -> None:
        """io thread: a waiting conversation over its budget fails closed (the peer sees
        it once its person answers). Closed on the io thread's next turn: the caller
        may be in the middle of serving a conversation."""
        if conn.expire(float("inf")) is None:
            return
        self._last_word(conn, self.channel.unavailable(conn))
        self.throttled.say((self.channel.name, "waiting"),
                           f"{self.channel.name} conversation waiting for a person refused "
                           f"(it fails closed): {why}")
        self.loop.call_soon(self._drop, conn)

    def _later(self, conn: Conn, delay: float) -> None:
        """io thread: a delayed answer (fail_delay) goes back to a worker when due."""
        self.loop.call_later(delay, lambda: self._queue(conn, time.monotonic()))

    def _drop(self, conn: Conn) -> None:
        """io thread: a parked connection the watchdog failed: stop watching it, and
        let its owner-to-be close it (and its conversation)."""
        self.loop.remove_reader(conn.fd)
        self._unwait(conn)
        if self.channel.serves_inline():
            self._inline(conn)
        else:
            self.ready.put(conn)
