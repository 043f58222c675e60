"""The asyncio servers: the PAM socket (root only) and the control socket.

They only carry frames: every decision is made by a conversation
(core/login.py for logins, core/verbs.py for CLI verbs) that the driver runs
step by step in worker threads. PAM calls and control requests have pools
of their own, so a slow `useradd` never queues a login.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import time
from concurrent.futures import Executor
from typing import Any

from ..core import verbs
from ..core.accounts import Accounts
from ..core.login import Login
from ..core.steps import Prompt, Result, Verdict
from ..errors import JctotpError, ProtocolError, StoreError, StoreUnavailable
from ..model import ExitCode, VerdictCode
from . import control_wire, pam_wire
from .driver import Deadline, Driver, StepTimeout, reply_budget
from .framing import peer_uid, read_payload

log = logging.getLogger("jctotpd")

HELLO_TIMEOUT = 10.0     # the shim sends HELLO right after connecting
ANSWER_TIMEOUT = 600.0   # a person typing (sshd's LoginGraceTime is shorter)
CONTROL_STEP = 120.0     # a control step (useradd waits up to 30 s)
_UNAVAIL = pam_wire.encode_step(Verdict(VerdictCode.AUTHINFO_UNAVAIL))


class Daemon:
    def __init__(self, accounts: Accounts, driver: Driver, pam_pool: Executor,
                 control_pool: Executor) -> None:
        self.acc = accounts
        self.driver = driver
        self.pam_pool = pam_pool
        self.control_pool = control_pool
        self.config = accounts.config
        self._slots = asyncio.Semaphore(self.config.max_connections)
        self.servers: list[asyncio.AbstractServer] = []
        self._delay_clamp_logged = False

    # --- sockets ---------------------------------------------------------

    async def start(self) -> None:
        self.servers.append(await self._listen(self.config.pam_socket, self.handle_pam, 0o600))
        self.servers.append(await self._listen(self.config.control_socket, self.handle_control,
                                               0o666))

    async def _listen(self, path: str, handler: Any, mode: int) -> asyncio.AbstractServer:
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
        old = os.umask(0o177)  # created 0600, then widened if asked: never a window
        try:
            server = await asyncio.start_unix_server(handler, path=path,
                                                     limit=control_wire.MAX_MESSAGE)
        finally:
            os.umask(old)
        os.chmod(path, mode)
        log.info("listening on %s (mode %o)", path, mode)
        return server

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        for server in self.servers:
            await server.wait_closed()
        for path in (self.config.pam_socket, self.config.control_socket):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    # --- PAM socket -------------------------------------------------------

    async def handle_pam(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        if self._slots.locked():
            log.error("refusing a PAM connection: max_connections (%d) reached",
                      self.config.max_connections)
            writer.close()
            return
        async with self._slots:
            try:
                uid = peer_uid(writer)
                if uid != 0:
                    log.warning("refused PAM connection from uid %d (only root may ask)", uid)
                    return
                await self._serve_pam(reader, writer)
            except ProtocolError as exc:
                log.warning("PAM peer broke the protocol: %s", exc)
                await self._send_quietly(writer, _UNAVAIL)
            except (asyncio.IncompleteReadError, ConnectionError):
                log.info("PAM peer left before the verdict (login abandoned)")
            except asyncio.TimeoutError:
                log.warning("PAM peer timed out")
            except StepTimeout as exc:
                log.error("PAM call failed closed: a step stalled (%s; store or directory "
                          "unresponsive?)", exc)
                await self._send_quietly(writer, _UNAVAIL)
            except StoreError as exc:
                if not isinstance(exc, StoreUnavailable):  # an outage is logged once, by the store
                    log.error("PAM call failed closed: %s", exc)
                await self._send_quietly(writer, _UNAVAIL)
            except Exception:
                log.exception("internal error during a PAM call; failing it closed")
                await self._send_quietly(writer, _UNAVAIL)
            finally:
                writer.close()

    async def _serve_pam(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        async def read_frame(timeout: float) -> str:
            return pam_wire.decode(await read_payload(reader, pam_wire.check_length, timeout))

        req = pam_wire.parse_hello(await read_frame(HELLO_TIMEOUT))
        deadline = Deadline(reply_budget(req.timeout))

        async def show(step: Any) -> None:
            writer.write(pam_wire.encode_step(step))

        async def ask(step: Prompt) -> str:
            writer.write(pam_wire.encode_step(step))
            await writer.drain()
            return pam_wire.parse_answer(await read_frame(ANSWER_TIMEOUT))

        verdict = await self.driver.drive(Login(self.acc, req).run(), show, ask, self.pam_pool,
                                          deadline)
        if not isinstance(verdict, Verdict):
            raise TypeError("a login ended with a control result")
        if verdict.delay:
            await self._fail_delay(deadline)
        log.log(logging.INFO if verdict.code == VerdictCode.SUCCESS else logging.WARNING,
                "%s %s user=%s service=%s rhost=%s -> %s", req.call, req.factors, req.user,
                req.service, req.rhost or "-", verdict.code)
        writer.write(pam_wire.encode_step(verdict))
        await writer.drain()

    async def _fail_delay(self, deadline: Deadline) -> None:
        """Every failure takes fail_delay from the last answer, whatever it cost to
        decide (unknown users and wrong factors look the same), but never reaches
        the shim's timeout: a late verdict would count as "daemon unavailable"."""
        wait = deadline.at - deadline.seconds + self.config.fail_delay - time.monotonic()
        if wait > deadline.left():
            if not self._delay_clamp_logged:
                log.warning("fail_delay %.1fs is not below the PAM timeout budget %.1fs: "
                            "failures are answered sooner", self.config.fail_delay,
                            deadline.seconds)
                self._delay_clamp_logged = True
            wait = deadline.left()
        if wait > 0:
            await asyncio.sleep(wait)

    @staticmethod
    async def _send_quietly(writer: asyncio.StreamWriter, data: bytes) -> None:
        try:
            writer.write(data)
            await writer.drain()
        except (ConnectionError, RuntimeError):
            pass

    # --- control socket ---------------------------------------------------

    async def handle_control(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        async def read_message(timeout: float) -> dict[str, Any]:
            return control_wire.decode(
                await read_payload(reader, control_wire.check_length, timeout))

        async def show(step: Any) -> None:
            writer.write(control_wire.encode(control_wire.step_message(step)))

        async def ask(step: Prompt) -> str:
            writer.write(control_wire.encode(control_wire.step_message(step)))
            await writer.drain()
            msg = await read_message(ANSWER_TIMEOUT)
            if msg.get("t") != "answer" or not isinstance(msg.get("text"), str):
                raise ProtocolError("expected an answer")
            text: str = msg["text"]
            return text

        started = time.monotonic()
        try:
            uid = peer_uid(writer)
            request = await read_message(HELLO_TIMEOUT)
            deadline = Deadline(CONTROL_STEP)
            conv = await self.driver.call(self.control_pool, deadline, verbs.handle, self.acc,
                                          uid, request)
            result = await self.driver.drive(conv, show, ask, self.control_pool, deadline)
            if not isinstance(result, Result):
                raise TypeError("a control verb ended with a PAM verdict")
            if result.delay:
                await asyncio.sleep(max(0.0, started + self.config.fail_delay
                                        - time.monotonic()))
            writer.write(control_wire.encode(control_wire.step_message(result)))
            await writer.drain()
        except JctotpError as exc:
            await self._send_quietly(writer, control_wire.encode(
                control_wire.step_message(Result(exc.exit_code, str(exc)))))
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError):
            log.info("control client left before the end (nothing more was changed)")
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
