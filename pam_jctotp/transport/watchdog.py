"""The conversation server's watchdog thread (`<name>-watch`): every connection
carries one deadline for what it waits for; a missed one is answered with the
channel's fail-closed word before the peer's own budget ends (see
conversation_server.py). A mixin of ConversationServer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import socket
import threading
import time

from .channel import Channel
from .connection import ANSWER, ARGON2, HELLO, QUEUED, SETTLE, SETTLING, Conn

log = logging.getLogger("jctotpd")

QUEUE_WAIT = 0.5         # no free worker for this long: every worker is stuck, fail closed
WATCH_TICK = 0.05        # the watchdog's period while connections are open


class Watchdog:
    channel: Channel
    open: set[Conn]
    _watched: set[Conn]
    _watching: threading.Event
    loop: asyncio.AbstractEventLoop
    listener: socket.socket | None
    workers: int
    _busy_since: float | None
    _closing: bool

    def _drop(self, conn: Conn) -> None:
        raise NotImplementedError   # ConversationServer's (the io thread)


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
        """The io thread has been in one step longer than QUEUE_WAIT: the connections
        waiting for it (their frame in, or not yet accepted) fail closed now, as when
        every worker is stuck. Those waiting for a person wait on."""
        waiting = [c for c in list(self.open) if c.why in (HELLO, ANSWER) and c.due is not None]
        poll = select.poll()
        for conn in waiting:
            poll.register(conn.fd, select.POLLIN)
        ready = {fd for fd, _ in poll.poll(0)}
        failed = 0
        for conn in waiting:
            if conn.fd in ready and conn.expire(float("inf")) is not None:
                self._last_word(conn, self.channel.unavailable(conn))
                self.loop.call_soon_threadsafe(self._drop, conn)
                failed += 1
        failed += self._refuse_backlog()
        if failed:
            self._say_no_worker()

    def _refuse_backlog(self) -> int:
        """Accept what waits in the listen backlog and fail it closed (the watchdog,
        while the io thread is stalled; both accept without blocking)."""
        refused = 0
        if self.listener is None:
            return refused
        for _ in range(self.channel.accept_batch):
            try:
                sock, _ = self.listener.accept()
            except OSError:
                break
            with sock:
                self.channel.refuse_stalled(sock)
            refused += 1
        return refused

    def _say_no_worker(self) -> None:
        name = self.channel.name
        self.channel.throttled.say((name, "workers"), f"{name} call failed closed: no free worker "
                           f"for {QUEUE_WAIT:.1f}s (all {self.workers} busy: store or "
                           "directory unresponsive?)")

    def _expired(self, conn: Conn, why: str) -> None:
        """The watchdog: what a missed deadline means. The answer goes out from here; the
        connection is closed by whoever owns it (a worker or the io thread)."""
        if why in (HELLO, ANSWER):
            self.channel.peer_late()
            self.loop.call_soon_threadsafe(self._drop, conn)
            return
        if why == SETTLING:
            log.error("after a verdict: the conversation took longer than %.1fs (its audit "
                      "event may be missing)", SETTLE)
            return
        self.channel.on_watchdog(why)
        if why == QUEUED:
            self._say_no_worker()
        else:
            if why == ARGON2 and conn.future is not None:
                conn.future.cancel()  # still queued: never run it
            seconds = conn.deadline.seconds if conn.deadline else 0.0
            log.error("%s call failed closed: a step stalled (%s took longer than %.1fs; "
                      "store or directory unresponsive?)", self.channel.name,
                      "password check" if why == ARGON2 else self.channel.step_name, seconds)
        self._last_word(conn, self.channel.unavailable(conn))

    @staticmethod
    def _last_word(conn: Conn, data: bytes | None) -> None:
        """A fail-closed answer, then no more (the peer sees the end at once)."""
        if data:
            with contextlib.suppress(OSError):
                conn.sock.send(data)
        with contextlib.suppress(OSError):
            conn.sock.shutdown(socket.SHUT_RDWR)
