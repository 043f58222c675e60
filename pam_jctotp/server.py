"""The asyncio servers: the PAM socket (root only) and the control socket.

They only carry frames: every decision is made by a conversation
(conversation.py for logins, control.py for CLI verbs) that this module
drives, running argon2 in a worker pool so no login holds up another.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import struct
import time
from concurrent.futures import Executor
from typing import Any, Awaitable, Callable

from . import control, control_protocol, protocol
from .accounts import Accounts
from .conversation import Login
from .errors import JctotpError, ProtocolError
from .passwords import Passwords
from .steps import (AUTHINFO_UNAVAIL, Conversation, Error, HashPassword, Info, Prompt, Result,
                    Verdict, VerifyPassword)

log = logging.getLogger("jctotpd")

HELLO_TIMEOUT = 10.0     # the shim sends HELLO right after connecting
ANSWER_TIMEOUT = 600.0   # a person typing (sshd's LoginGraceTime is shorter)
_CRED = struct.Struct("3i")


async def read_payload(reader: asyncio.StreamReader, check_length: Callable[[int], int],
                       timeout: float) -> bytes:
    """One frame of either socket: a 4-byte big-endian length, then the payload.

    Both sockets share the framing; only the size limit (check_length) differs.
    """
    header = await asyncio.wait_for(reader.readexactly(4), timeout)
    length = check_length(int.from_bytes(header, "big"))
    return await asyncio.wait_for(reader.readexactly(length), timeout)


def peer_uid(writer: asyncio.StreamWriter) -> int:
    sock = writer.get_extra_info("socket")
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _CRED.size)
    return _CRED.unpack(creds)[1]


async def drive(conv: Conversation, show: Callable[[Any], Awaitable[None]],
                ask: Callable[[Prompt], Awaitable[str]], passwords: Passwords,
                pool: Executor) -> Verdict | Result:
    """Run a conversation to its end, doing the I/O each step asks for."""
    loop = asyncio.get_running_loop()
    value: Any = None
    try:
        while True:
            step = conv.send(value)
            value = None
            if isinstance(step, (Verdict, Result)):
                return step
            if isinstance(step, Prompt):
                value = await ask(step)
            elif isinstance(step, (Info, Error)):
                await show(step)
            elif isinstance(step, VerifyPassword):
                value = await loop.run_in_executor(pool, passwords.verify, step.stored_hash,
                                                   step.password)
            elif isinstance(step, HashPassword):
                value = await loop.run_in_executor(pool, passwords.hash, step.password)
            else:
                raise AssertionError(f"unknown step {step!r}")
    except StopIteration:
        raise AssertionError("conversation ended without a verdict") from None
    finally:
        conv.close()


class Daemon:
    def __init__(self, accounts: Accounts, passwords: Passwords, pool: Executor) -> None:
        self.acc = accounts
        self.passwords = passwords
        self.pool = pool
        self.config = accounts.config
        self._slots = asyncio.Semaphore(self.config.max_connections)
        self.servers: list[asyncio.AbstractServer] = []

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
                                                     limit=control_protocol.MAX_MESSAGE)
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
                await self._send_quietly(writer, protocol.encode_step(Verdict(AUTHINFO_UNAVAIL)))
            except (asyncio.IncompleteReadError, ConnectionError):
                log.info("PAM peer left before the verdict (login abandoned)")
            except asyncio.TimeoutError:
                log.warning("PAM peer timed out")
            except Exception:
                log.exception("internal error during a PAM call; failing it closed")
                await self._send_quietly(writer, protocol.encode_step(Verdict(AUTHINFO_UNAVAIL)))
            finally:
                writer.close()

    async def _serve_pam(self, reader: asyncio.StreamReader,
                         writer: asyncio.StreamWriter) -> None:
        async def read_frame(timeout: float) -> str:
            return protocol.decode(await read_payload(reader, protocol.check_length, timeout))

        req = protocol.parse_hello(await read_frame(HELLO_TIMEOUT))
        last_answer = time.monotonic()

        async def show(step: Any) -> None:
            writer.write(protocol.encode_step(step))

        async def ask(step: Prompt) -> str:
            nonlocal last_answer
            writer.write(protocol.encode_step(step))
            await writer.drain()
            answer = protocol.parse_answer(await read_frame(ANSWER_TIMEOUT))
            last_answer = time.monotonic()
            return answer

        verdict = await drive(Login(self.acc, req).run(), show, ask, self.passwords, self.pool)
        assert isinstance(verdict, Verdict)
        if verdict.delay:
            # Every failure takes fail_delay from the last answer, whatever it cost
            # to decide: unknown users and wrong factors look the same.
            wait = last_answer + self.config.fail_delay - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        log.log(logging.INFO if verdict.code == "SUCCESS" else logging.WARNING,
                "%s %s user=%s service=%s rhost=%s -> %s", req.call, req.factors, req.user,
                req.service, req.rhost or "-", verdict.code)
        writer.write(protocol.encode_step(verdict))
        await writer.drain()

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
            return control_protocol.decode(
                await read_payload(reader, control_protocol.check_length, timeout))

        async def show(step: Any) -> None:
            writer.write(control_protocol.encode(control_protocol.step_message(step)))

        async def ask(step: Prompt) -> str:
            writer.write(control_protocol.encode(control_protocol.step_message(step)))
            await writer.drain()
            msg = await read_message(ANSWER_TIMEOUT)
            if msg.get("t") != "answer" or not isinstance(msg.get("text"), str):
                raise ProtocolError("expected an answer")
            return msg["text"]

        started = time.monotonic()
        try:
            uid = peer_uid(writer)
            request = await read_message(HELLO_TIMEOUT)
            conv = control.handle(self.acc, uid, request)
            result = await drive(conv, show, ask, self.passwords, self.pool)
            assert isinstance(result, Result)
            if result.delay:
                await asyncio.sleep(max(0.0, started + self.config.fail_delay
                                        - time.monotonic()))
            writer.write(control_protocol.encode(control_protocol.step_message(result)))
            await writer.drain()
        except JctotpError as exc:
            await self._send_quietly(writer, control_protocol.encode(
                control_protocol.step_message(Result(exit=exc.exit_code, message=str(exc)))))
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.TimeoutError):
            log.info("control client left before the end (nothing more was changed)")
        except Exception:
            log.exception("internal error in a control request")
            await self._send_quietly(writer, control_protocol.encode(
                control_protocol.step_message(Result(exit=1, message="internal error; see "
                                                     "the daemon log"))))
        finally:
            writer.close()
