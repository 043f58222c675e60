"""The daemon's sockets: the PAM socket (root only) and the control socket.

They only carry frames: every decision is made by a conversation
(core/login.py for logins, core/verbs.py for CLI verbs). The PAM socket is
served by threads of its own (pam_server.py: `pam-io` runs the steps itself on
local SQLite, else a login runs on one worker from HELLO to verdict); the
control socket by this asyncio loop, its steps run by the driver in the
control pool. So a slow `useradd` never queues a login.

The control socket is world-writable: it has its own accept loop that
counts each connection against its uid's budget (limits.py) before reading
anything, so no local user can take the descriptors, memory or loop time
the PAM socket needs. A granted login is audited only once its verdict was
delivered (`abandoned` otherwise).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import resource
import socket
import stat
import time
from concurrent.futures import Executor
from typing import Any, Callable

from ..core import verbs
from ..core.accounts import Accounts
from ..core.steps import Prompt, Result
from ..errors import (JctotpError, ProtocolError)
from ..model import ExitCode
from . import control_wire, limits
from .driver import Deadline, Driver, StepTimeout
from .framing import listen_unix, read_payload, socket_peer_uid
from .pam_server import PamServer

log = logging.getLogger("jctotpd")

CONTROL_STEP = 120.0     # a control step (useradd waits up to 30 s)
ACCEPT_BATCH = 8         # control accepts per wake-up: the PAM socket gets its turn
ACCEPT_PAUSE = 1.0       # out of descriptors: stop accepting control connections this long
PARSE_ON_LOOP = 16384    # larger control JSON (root's bulk verbs) is parsed in a worker
HOUSEKEEPING = 60.0      # seconds between housekeeping runs (lock markers follow the store)
LAST_WORD = 5.0          # an error reply on a connection that is ending
_OUT_OF_FILES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class TooLarge(ProtocolError):
    """A control request over its sender's budget (read no further)."""


class Daemon:
    def __init__(self, accounts: Accounts, driver: Driver, pam_workers: int,
                 control_pool: Executor, housekeeping: Callable[[], None] | None = None) -> None:
        self.acc = accounts
        self.driver = driver
        self.control_pool = control_pool
        self.config = accounts.config
        self.housekeeping = housekeeping
        self.throttled = limits.Throttled(log)
        self.pam = PamServer(accounts, driver.directory, driver.argon2, lambda: self.config,
                             self.throttled, pam_workers)
        nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        pam = self.pam.plan
        self.limits = limits.ControlLimits(limits.plan(nofile, pam.working + pam.waiting))
        self._control_sock: socket.socket | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # --- sockets ---------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self._loop_exception)
        plan = self.limits.plan
        pam = self.pam.plan
        log.info("control connections: %d per user, %d for all users, %d for root; PAM "
                 "connections: %d working, %d waiting for a person (%d per requester) "
                 "(descriptor limit %d)", plan.per_user, plan.users, plan.root, pam.working,
                 pam.waiting, pam.per_requester, resource.getrlimit(resource.RLIMIT_NOFILE)[0])
        self._prepare(self.config.pam_socket)
        self.pam.start(self.config.pam_socket)
        log.info("listening on %s (mode %o)", self.config.pam_socket, 0o600)
        self._listen_control(self.config.control_socket)
        if self.housekeeping is not None:
            self._spawn(self._housekeep())

    @staticmethod
    def _prepare(path: str) -> None:
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        if os.path.lexists(path):
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                raise JctotpError(f"{path} exists and is not a socket; refusing to replace it")
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.connect(path)
            except OSError:
                os.unlink(path)  # stale socket of a dead daemon
            else:
                raise JctotpError(f"another daemon is already serving {path}")
            finally:
                probe.close()

    def _listen_control(self, path: str) -> None:
        """The control socket has its own accept loop: each connection is counted
        against its uid's budget before anything is read or allocated for it."""
        self._prepare(path)
        sock = listen_unix(path)
        os.chmod(path, 0o666)
        self._control_sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._accept_control)
        log.info("listening on %s (mode %o)", path, 0o666)

    def _loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncio's accept loop reports running out of descriptors with a traceback
        per accept; one line per interval says it all."""
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _OUT_OF_FILES:
            self.throttled.say("out of files", f"out of descriptors: {exc.strerror}; "
                               "new connections wait (raise LimitNOFILE?)")
            return
        loop.default_exception_handler(context)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _housekeep(self) -> None:
        assert self.housekeeping is not None
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(HOUSEKEEPING)
            try:
                await loop.run_in_executor(self.control_pool, self.housekeeping)
            except Exception:
                log.exception("housekeeping failed")

    async def close(self) -> None:
        if self._control_sock is not None:
            asyncio.get_running_loop().remove_reader(self._control_sock.fileno())
            self._control_sock.close()
            self._control_sock = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # The logins in a worker get a moment to finish (their verdicts, their audit).
        await asyncio.get_running_loop().run_in_executor(self.control_pool, self.pam.close)
        for path in (self.config.pam_socket, self.config.control_socket):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    @staticmethod
    async def _send_quietly(writer: asyncio.StreamWriter, data: bytes) -> None:
        """A last word on a connection that is ending: never waits for long."""
        try:
            writer.write(data)
            await asyncio.wait_for(writer.drain(), LAST_WORD)
        except (ConnectionError, RuntimeError, asyncio.TimeoutError):
            pass

    # --- control socket ---------------------------------------------------

    def _accept_control(self) -> None:
        """Accept a few control connections; each one is admitted against its uid's
        budget at once, or refused (a short reply, then closed) before any read."""
        assert self._control_sock is not None
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self._control_sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno not in _OUT_OF_FILES:  # ECONNABORTED and the like: that one only
                    self.throttled.say("accept", f"control socket: accept: {exc.strerror}")
                    continue
                self.throttled.say("out of files", f"control socket: out of descriptors "
                                   f"({exc.strerror}); not accepting for {ACCEPT_PAUSE:.0f} s")
                self._pause_control(ACCEPT_PAUSE)
                return
            try:
                uid = socket_peer_uid(conn)
            except OSError:
                conn.close()
                continue
            refusal = self.limits.admit(uid)
            if refusal is not None:
                self.throttled.say(("full", uid), f"control connection refused: {refusal}")
                self._refuse(conn, Result(ExitCode.UNAVAILABLE, f"too many connections: "
                                          f"{refusal}; try again later"))
                continue
            self._spawn(self._control_connection(conn, uid))

    def _pause_control(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        sock = self._control_sock
        assert sock is not None
        loop.remove_reader(sock.fileno())

        def resume() -> None:
            if self._control_sock is sock:
                loop.add_reader(sock.fileno(), self._accept_control)

        loop.call_later(seconds, resume)

    @staticmethod
    def _refuse(conn: socket.socket, result: Result) -> None:
        """One short reply (it fits in the socket buffer: never blocks), then close."""
        try:
            conn.setblocking(False)
            conn.send(control_wire.encode(control_wire.step_message(result)))
        except OSError:
            pass
        finally:
            conn.close()

    async def _control_connection(self, conn: socket.socket, uid: int) -> None:
        try:
            try:
                # The read buffer is sized to this uid's budget, not to root's.
                reader, writer = await asyncio.open_unix_connection(
                    sock=conn, limit=self.limits.read_limit(uid))
            except OSError:
                conn.close()
                return
            await self.handle_control(reader, writer, uid)
        finally:
            self.limits.release(uid)

    async def handle_control(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter, uid: int) -> None:
        budget = self.limits.message_limit(uid)
        loop = asyncio.get_running_loop()

        def check_length(length: int) -> int:
            if length > budget:
                raise TooLarge(f"request of {length} bytes is over the {budget}-byte limit "
                               f"for uid {uid}")
            return control_wire.check_length(length)

        async def read_message(timeout: float) -> dict[str, Any]:
            data = await read_payload(reader, check_length, timeout)
            if len(data) <= PARSE_ON_LOOP:
                return control_wire.decode(data)
            return await loop.run_in_executor(self.control_pool, control_wire.decode, data)

        patience = self.limits.answer_timeout(uid)

        async def send(step: Any) -> None:
            # A client that never reads must not park the connection either.
            writer.write(control_wire.encode(control_wire.step_message(step)))
            await asyncio.wait_for(writer.drain(), patience)

        async def ask(step: Prompt) -> str:
            await send(step)
            msg = await read_message(patience)
            if msg.get("t") != "answer" or not isinstance(msg.get("text"), str):
                raise ProtocolError("expected an answer")
            text: str = msg["text"]
            return text

        started = time.monotonic()
        try:
            request = await read_message(self.limits.first_message_timeout(uid))
            deadline = Deadline(CONTROL_STEP)
            conv = await self.driver.call(self.control_pool, deadline, verbs.handle, self.acc,
                                          uid, request)
            result = await self.driver.drive(conv, send, ask, self.control_pool, deadline,
                                             requester=limits.requester("", uid))
            if not isinstance(result, Result):
                raise TypeError("a control verb ended with a PAM verdict")
            if result.delay:
                await asyncio.sleep(max(0.0, started + self.config.fail_delay
                                        - time.monotonic()))
            await send(result)
        except TooLarge as exc:
            self.throttled.say(("too large", uid), f"control {exc}: refused")
            await self._send_quietly(writer, control_wire.encode(control_wire.step_message(
                Result(ExitCode.USAGE, "request too large"))))
        except ProtocolError as exc:
            # Any local user can send garbage: one line per uid and interval, never a traceback.
            self.throttled.say(("malformed", uid), f"control request from uid {uid} refused: "
                               f"{exc}")
            await self._send_quietly(writer, control_wire.encode(control_wire.step_message(
                Result(exc.exit_code, str(exc)))))
        except JctotpError as exc:
            await self._send_quietly(writer, control_wire.encode(
                control_wire.step_message(Result(exc.exit_code, str(exc)))))
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError):
            # Per uid and interval: connecting and leaving in a loop writes no log.
            self.throttled.say(("left", uid), f"control client (uid {uid}) left before the "
                               "end (nothing more was changed)", logging.INFO)
        except StepTimeout as exc:
            log.error("control request stalled: %s", exc)
            await self._send_quietly(writer, control_wire.encode(control_wire.step_message(
                Result(ExitCode.UNAVAILABLE, "the daemon's store did not answer in time"))))
        except Exception:
            log.exception("internal error in a control request")
            await self._send_quietly(writer, control_wire.encode(
                control_wire.step_message(Result(ExitCode.REFUSED, "internal error; see "
                                                 "the daemon log"))))
        finally:
            writer.close()
