"""The conversation server's workers (`<name>-N`, or the io thread in inline mode):
they read a frame, run the conversation's steps through perform() and write the
replies themselves, until it waits for someone (parked on the io thread) or
ends (see conversation_server.py). A mixin of ConversationServer.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import select
import threading
import time
from concurrent.futures import Future
from typing import Any

from ..core.steps import Error, Info, Prompt, Result, SetPassword, Verdict, VerifyPassword
from ..directory import Directory
from .channel import Channel
from .connection import (
    ANSWER,
    ARGON2,
    HELLO,
    SETTLE,
    SETTLING,
    STEP,
    Conn,
    Deadline,
    PeerGone,
    finish,
)
from .fairqueue import FairPool, TooManyChecks
from .framing import HEADER
from .perform import perform

log = logging.getLogger("jctotpd")

INLINE_WAIT = 0.02       # a worker waits this long for a frame, then parks the connection
RECV_SIZE = 4096
TIMER_SLACK = 0.003      # a fail_delay's timer fires this early; the worker sleeps the rest
PARKED, DONE = False, True   # how _serve ends: waiting for someone, or finished


class Worker:
    channel: Channel
    directory: Directory
    argon2: FairPool
    open: set[Conn]
    _watched: set[Conn]
    ready: queue.SimpleQueue[Conn | None]
    loop: asyncio.AbstractEventLoop
    _local: threading.local
    _count_lock: threading.Lock
    _idle: int
    _busy_since: float | None
    _delay_clamp_logged: bool

    # The io thread's side (ConversationServer), and the watchdog's last word.
    def _queue(self, conn: Conn, now: float) -> None:
        raise NotImplementedError

    def _park_io(self, conn: Conn) -> None:
        raise NotImplementedError

    def _later(self, conn: Conn, delay: float) -> None:
        raise NotImplementedError

    def _on_io(self) -> bool:
        raise NotImplementedError

    @staticmethod
    def _last_word(conn: Conn, data: bytes | None) -> None:
        raise NotImplementedError


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

    def _inline(self, conn: Conn) -> None:
        """The io thread runs the conversation's next steps itself, under the watchdog."""
        self._busy_since = time.monotonic()
        try:
            self._run(conn)
        finally:
            self._busy_since = None

    def _run(self, conn: Conn) -> None:
        """Take a ready connection over and serve it until it parks or ends."""
        if not conn.claim():
            self._close(conn)
            return
        try:
            if self._serve(conn):
                self._close(conn)
        except Exception as exc:  # every fault fails the call closed
            if not conn.dead:  # else the watchdog already answered (and logged) it
                word = self.channel.fault(conn, exc)
                if word is not None and conn.final is None and conn.claim():
                    self._last_word(conn, word)
            self._close(conn)

    def _serve(self, conn: Conn) -> bool:
        """Run the conversation until it waits for someone (PARKED) or ends (DONE)."""
        while True:
            if conn.reading:
                payload = self._read_frame(conn)
                if payload is None:
                    return PARKED
                conn.reading = False
                if conn.conv is None:
                    conn.conv, budget = self.channel.start(conn, payload)
                    conn.deadline = Deadline(budget)
                else:
                    conn.value = self.channel.answer(conn, payload)
                assert conn.deadline is not None
                conn.deadline.at = conn.ready_at + conn.deadline.seconds
            if conn.final is not None:  # back from its fail_delay
                self._until(conn)
                return self._settle(conn)
            if conn.error is not None:
                raise conn.error
            step = self._run_step(conn)
            if step is None:  # the watchdog answered for it
                return DONE
            flow = perform(step, self, conn)
            if flow is not None:
                return bool(flow)

    # --- the steps (perform.StepIO): None goes on, PARKED or DONE return ---------

    def prompt(self, conn: Conn, step: Prompt) -> bool | None:
        self._send(conn, self.channel.encode(conn, step))
        conn.reading = True
        conn.ready_at = time.monotonic()  # (an answer already there came about now)
        return None

    def show(self, conn: Conn, step: Info | Error) -> bool | None:
        self._send(conn, self.channel.encode(conn, step))
        return None

    def verify(self, conn: Conn, step: VerifyPassword) -> bool | None:
        self._to_argon2(conn, self.directory.verify_password, step.user, step.password)
        return PARKED

    def set_password(self, conn: Conn, step: SetPassword) -> bool | None:
        self._to_argon2(conn, self.directory.set_password, step.user, step.password,
                        step.old)
        return PARKED

    def end(self, conn: Conn, step: Verdict | Result) -> bool | None:
        if not isinstance(step, self.channel.final_type):
            raise TypeError(f"a {self.channel.name} conversation ended with a "
                            f"{type(step).__name__}")
        if not self._delay(conn, step):
            return PARKED
        self._until(conn)
        return self._settle(conn)

    def _run_step(self, conn: Conn) -> Any:
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

    def _to_argon2(self, conn: Conn, fn: Any, *args: Any) -> None:
        """Password checks run in their bounded pool; the connection waits there."""
        assert conn.deadline is not None
        conn.arm(ARGON2, conn.deadline.at)
        future: Future[Any] = self.argon2.submit(conn.requester, fn, *args)
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

    def _delay(self, conn: Conn, step: Verdict | Result) -> bool:
        """Hold a failure back its fail_delay, once (False: waiting for it)."""
        assert conn.deadline is not None
        conn.final = step
        if step.delay:
            wait = self._fail_delay(conn.deadline)
            conn.send_at = time.monotonic() + wait
            if self._on_io() and wait > 0:
                self._later(conn, wait)  # inline: no hand-over to allow for
                return False
            if wait > TIMER_SLACK:
                # The io thread's timer wakes us a little early (its clock has ms ticks,
                # and the hand-over to a worker takes time); _serve sleeps the rest.
                self.loop.call_soon_threadsafe(self._later, conn, wait - TIMER_SLACK)
                return False
        return True

    @staticmethod
    def _until(conn: Conn) -> None:
        """The last moments of a fail_delay (at most TIMER_SLACK and the queue's wait)."""
        rest = conn.send_at - time.monotonic()
        if rest > 0:
            time.sleep(rest)

    def _fail_delay(self, deadline: Deadline) -> float:
        """Every failure takes fail_delay from the last answer, whatever it cost to
        decide (unknown users and wrong factors look the same), but never reaches
        the peer's timeout: a late answer would count as "daemon unavailable"."""
        fail_delay = self.channel.config().fail_delay
        wait = deadline.at - deadline.seconds + fail_delay - time.monotonic()
        if wait > deadline.left():
            if not self._delay_clamp_logged:
                log.warning("fail_delay %.1fs is not below the %s timeout budget %.1fs: "
                            "failures are answered sooner", fail_delay, self.channel.name,
                            deadline.seconds)
                self._delay_clamp_logged = True
            wait = deadline.left()
        return wait

    def _settle(self, conn: Conn) -> bool:
        """Deliver the last frame, then tell the conversation whether it arrived."""
        step = conn.final
        assert step is not None and conn.conv is not None
        data = self.channel.final(conn, step)  # its log line: before PAM has its answer
        # A peer that is gone makes the send fail (EPIPE: a Unix socket's peer
        # closed); no peek for end-of-file first, that was a syscall per login.
        try:
            self._send(conn, data)
            delivered = True
        except (ConnectionError, TimeoutError):
            delivered = False
            self.channel.undelivered(conn, step)
        conn.conv_closed = True
        if not self.channel.tells_delivery:
            conn.conv.close()
            return DONE
        conn.arm(SETTLING, time.monotonic() + SETTLE)
        try:
            after = finish(conn.conv, delivered)
        except Exception:
            log.exception("after a verdict (its audit event may be missing)")
            after = None
        finally:
            conn.claim()
        if after is not None:
            log.error("a conversation went on after its verdict (%s)", type(after).__name__)
        return DONE

    # --- frames -------------------------------------------------------------------

    def _read_frame(self, conn: Conn) -> bytes | None:
        """The next frame's payload, or None: not here within INLINE_WAIT (at once when
        others are waiting for a worker), so the connection is parked on the io
        thread (its deadline armed) until it is readable."""
        buf = conn.buf
        waited = False
        while True:
            if len(buf) >= HEADER.size:
                length = self.channel.check_length(conn, HEADER.unpack_from(buf)[0])
                end = HEADER.size + length
                if len(buf) >= end:
                    payload = bytes(buf[HEADER.size:end])
                    del buf[:end]
                    return payload
            try:
                data = conn.sock.recv(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                # Wait for a prompt peer only while nobody else is ready to run
                # (the io thread never waits: the others' frames are its to serve).
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

    def _park(self, conn: Conn) -> None:
        if conn.conv is None:
            conn.arm(HELLO, conn.ready_at + self.channel.first_timeout(conn))
        else:
            conn.arm(ANSWER, time.monotonic() + self.channel.answer_timeout(conn))
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

    def _send(self, conn: Conn, data: bytes) -> None:
        view = memoryview(data)
        give_up = None
        while view:
            try:
                view = view[conn.sock.send(view):]
                continue
            except (BlockingIOError, InterruptedError):
                pass
            now = time.monotonic()
            give_up = give_up or now + self.channel.send_patience(conn)
            if now >= give_up:
                raise TimeoutError("the peer does not read its frames")
            self._wait(conn.fd, select.POLLOUT, give_up - now)

    # --- the end of a connection --------------------------------------------------

    def _close(self, conn: Conn) -> None:
        """Close the socket and, if it never reached its end, the conversation (it
        audits the abandoned login: in this thread, like every step)."""
        try:
            conn.sock.close()
        finally:
            try:
                self.open.remove(conn)
            except KeyError:
                pass
            else:
                self.channel.release(conn)
            self._watched.discard(conn)
            if conn.conv is not None and not conn.conv_closed:
                conn.conv_closed = True
                try:
                    conn.conv.close()
                except Exception:
                    log.exception("closing an abandoned conversation")
