"""Drive the real Linux-PAM (libpam.so.0) from Python with ctypes.

`run()` starts a PAM transaction with service files from a private directory
(`pam_start_confdir`, Linux-PAM >= 1.4), answers the conversation from a list
or a callable, and records every message the modules showed. Each call has its
own handle, so many logins may run at once from threads.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import re
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
SHIM = os.environ.get("JCTOTP_SHIM") or str(REPO / "native" / "pam_jctotp.so")

# Return codes, from Linux-PAM's security/_pam_types.h.
PAM_SUCCESS = 0
PAM_OPEN_ERR = 1
PAM_SYMBOL_ERR = 2
PAM_SERVICE_ERR = 3
PAM_SYSTEM_ERR = 4
PAM_BUF_ERR = 5
PAM_PERM_DENIED = 6
PAM_AUTH_ERR = 7
PAM_CRED_INSUFFICIENT = 8
PAM_AUTHINFO_UNAVAIL = 9
PAM_USER_UNKNOWN = 10
PAM_MAXTRIES = 11
PAM_NEW_AUTHTOK_REQD = 12
PAM_ACCT_EXPIRED = 13
PAM_SESSION_ERR = 14
PAM_CRED_UNAVAIL = 15
PAM_CRED_EXPIRED = 16
PAM_CRED_ERR = 17
PAM_NO_MODULE_DATA = 18
PAM_CONV_ERR = 19
PAM_AUTHTOK_ERR = 20
PAM_AUTHTOK_RECOVERY_ERR = 21
PAM_AUTHTOK_LOCK_BUSY = 22
PAM_AUTHTOK_DISABLE_AGING = 23
PAM_TRY_AGAIN = 24
PAM_IGNORE = 25
PAM_ABORT = 26
PAM_AUTHTOK_EXPIRED = 27
PAM_MODULE_UNKNOWN = 28
PAM_BAD_ITEM = 29
PAM_CONV_AGAIN = 30
PAM_INCOMPLETE = 31

PAM_CODES: dict[str, int] = {
    k: v for k, v in globals().items() if k.startswith("PAM_") and isinstance(v, int)
}
CODE_NAMES: dict[int, str] = {v: k for k, v in PAM_CODES.items()}

_ITEMS = {"service": 1, "user": 2, "tty": 3, "rhost": 4, "authtok": 6}
_STYLES = {1: "prompt_off", 2: "prompt_on", 3: "error", 4: "info"}


def pam_strerror(rc: int) -> str:
    """The constant's name for a PAM return code, e.g. 'PAM_AUTH_ERR'."""
    return CODE_NAMES.get(rc, f"PAM_<{rc}>")


@dataclass
class Message:
    style: str  # "prompt_off" | "prompt_on" | "info" | "error"
    text: str


@dataclass
class Result:
    rc: int
    name: str
    transcript: list[Message] = field(default_factory=list)
    elapsed: float = 0.0


Answer = str | None
Answers = Sequence[str] | Callable[[Message, list[Message]], Answer]


class _PamMessage(ctypes.Structure):
    _fields_ = [("msg_style", ctypes.c_int), ("msg", ctypes.c_char_p)]


class _PamResponse(ctypes.Structure):
    _fields_ = [("resp", ctypes.c_void_p), ("resp_retcode", ctypes.c_int)]


_CONV_FUNC = ctypes.CFUNCTYPE(
    ctypes.c_int,
    ctypes.c_int,
    ctypes.POINTER(ctypes.POINTER(_PamMessage)),
    ctypes.POINTER(ctypes.POINTER(_PamResponse)),
    ctypes.c_void_p,
)


class _PamConv(ctypes.Structure):
    _fields_ = [("conv", _CONV_FUNC), ("appdata_ptr", ctypes.c_void_p)]


_libpam = ctypes.CDLL("libpam.so.0", use_errno=True)
# The process's own malloc (global lookup, not libc's handle): modules free()
# the responses, and under LD_PRELOAD=libasan that free is ASan's.
_libc = ctypes.CDLL(None, use_errno=True)
_libc.calloc.restype = ctypes.c_void_p
_libc.calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
_libc.strdup.restype = ctypes.c_void_p
_libc.strdup.argtypes = [ctypes.c_char_p]
_libc.free.argtypes = [ctypes.c_void_p]

_pam_handle_p = ctypes.c_void_p
_libpam.pam_start_confdir.restype = ctypes.c_int
_libpam.pam_start_confdir.argtypes = [
    ctypes.c_char_p,
    ctypes.c_char_p,
    ctypes.POINTER(_PamConv),
    ctypes.c_char_p,
    ctypes.POINTER(_pam_handle_p),
]
_libpam.pam_end.argtypes = [_pam_handle_p, ctypes.c_int]
_libpam.pam_set_item.argtypes = [_pam_handle_p, ctypes.c_int, ctypes.c_void_p]
for _fn in ("pam_authenticate", "pam_acct_mgmt", "pam_chauthtok"):
    getattr(_libpam, _fn).argtypes = [_pam_handle_p, ctypes.c_int]


def write_service(confdir: str | os.PathLike[str], service: str, lines: list[str]) -> Path:
    """Write the PAM service file `confdir/service` (one PAM rule a line)."""
    path = Path(confdir) / service
    path.write_text("".join(line + "\n" for line in lines))
    return path


def service(confdir: str | os.PathLike[str], daemon: Any, *options: str,
            name: str = "jctotp-test", timeout: int = 5) -> str:
    """`confdir/name`: the shim in auth and account, on `daemon`'s PAM socket
    (anything with `.pam_socket`); returns the service name."""
    opts = " ".join((f"socket={daemon.pam_socket}", f"timeout={timeout}") + options)
    write_service(confdir, name, [f"auth required {SHIM} {opts}",
                                  f"account required {SHIM} {opts}"])
    return name


def key_from(transcript: Sequence[Message]) -> str:
    """The base32 key the enrollment screen shows beside its QR code."""
    text = "\n".join(m.text for m in transcript)
    found = re.search(r"Or enter this key by hand: ([A-Z2-7 ]+)\n", text)
    assert found, text
    return found.group(1).replace(" ", "")


def build_shim(target: str = "all") -> str:
    """`make` the shim (a failure fails the run); returns its path. Every pytest-xdist
    worker builds: one at a time, so none loads a half-written .so."""
    native = REPO / "native"
    lock = os.open(native, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run(["make", "-s", "-C", str(native), target], check=True)
    finally:
        os.close(lock)
    return SHIM


def _authtok_service(confdir: str | os.PathLike[str], service: str) -> str:
    """A wrapper service that sets PAM_AUTHTOK, then runs `service`.

    libpam lets only modules set PAM_AUTHTOK (pam_set_item from the application
    gives PAM_BAD_ITEM), so pam_exec's expose_authtok prompts for it, the
    driver answers that one prompt itself, and the real stack follows by
    `include` (by absolute path: libpam 1.5 resolves named includes in /etc/pam.d).
    """
    inner = Path(confdir).resolve() / service
    name = f".{service}.authtok"
    lines = ["auth optional pam_exec.so expose_authtok quiet /bin/cat"]
    lines += [f"{kind} include {inner}" for kind in ("auth", "account", "password", "session")]
    tmp = Path(confdir) / f"{name}.{os.getpid()}.{threading.get_ident()}"
    write_service(confdir, tmp.name, lines)
    os.replace(tmp, Path(confdir) / name)  # atomic: concurrent runs may share it
    return name


class _ConvError(Exception):
    pass


def _bytes(text: str) -> bytes:
    """UTF-8; lone surrogates ("\udce9") become raw bytes, to send invalid UTF-8."""
    return text.encode("utf-8", "surrogateescape")


def _make_conv(answers: Answers, transcript: list[Message], authtok: str | None) -> Any:
    queue = None if callable(answers) else list(answers)
    preset = [authtok] if authtok is not None else []  # pam_exec's prompt, answered first

    def reply(message: Message) -> Answer:
        if queue is None:
            return answers(message, transcript)  # type: ignore[operator]
        return queue.pop(0) if queue else None

    def conv(n, msgs, resps, _appdata):  # runs in the thread that called libpam
        arr = _libc.calloc(n, ctypes.sizeof(_PamResponse))
        if not arr:
            return PAM_BUF_ERR
        out = ctypes.cast(arr, ctypes.POINTER(_PamResponse))
        try:
            for i in range(n):
                m = msgs[i].contents
                if preset and m.msg_style == 1:
                    out[i].resp = _libc.strdup(_bytes(preset.pop()))
                    continue
                message = Message(
                    _STYLES.get(m.msg_style, str(m.msg_style)),
                    (m.msg or b"").decode("utf-8", "replace"),
                )
                transcript.append(message)
                if message.style in ("prompt_off", "prompt_on"):
                    answer = reply(message)
                    if answer is None:
                        raise _ConvError
                    out[i].resp = _libc.strdup(_bytes(answer))
        except Exception:  # _ConvError, or a bug in a test's callable: never into C
            for i in range(n):
                _libc.free(out[i].resp)
            _libc.free(arr)
            return PAM_CONV_ERR
        resps[0] = out
        return PAM_SUCCESS

    return _CONV_FUNC(conv)


def run(
    confdir: str | os.PathLike[str],
    service: str,
    user: str | None,
    answers: Answers,
    *,
    call: str = "auth",
    rhost: str | None = None,
    tty: str | None = None,
    authtok: str | None = None,
) -> Result:
    """One PAM transaction: pam_authenticate ("auth"), pam_acct_mgmt ("acct"),
    or both ("both": acct_mgmt only if auth succeeded), or pam_chauthtok ("passwd").

    `answers` answers the prompts in order (a prompt beyond the list fails the
    conversation with PAM_CONV_ERR), or is a callable (message, transcript) ->
    answer, None for PAM_CONV_ERR. `authtok` sets PAM_AUTHTOK before the stack
    runs, as an earlier pam_unix would (see _authtok_service). `user=None`
    leaves PAM_USER unset, so a module must ask for it (pam_get_user).
    """
    if call not in ("auth", "acct", "both", "passwd"):
        raise ValueError(f"call must be auth, acct, both or passwd, not {call!r}")
    transcript: list[Message] = []
    if authtok is not None:
        service = _authtok_service(confdir, service)
    conv_func = _make_conv(answers, transcript, authtok)  # kept alive until pam_end
    conv = _PamConv(conv_func, None)
    pamh = _pam_handle_p()
    start = time.monotonic()
    c_user = None if user is None else _bytes(user)
    rc = _libpam.pam_start_confdir(
        service.encode(), c_user, ctypes.byref(conv), os.fsencode(confdir), ctypes.byref(pamh)
    )
    if rc != PAM_SUCCESS:
        return Result(rc, pam_strerror(rc), transcript, time.monotonic() - start)
    try:
        for item, value in (("rhost", rhost), ("tty", tty)):
            if value is not None:
                buf = ctypes.create_string_buffer(_bytes(value))
                rc = _libpam.pam_set_item(pamh, _ITEMS[item], buf)  # libpam copies it
                if rc != PAM_SUCCESS:
                    raise RuntimeError(f"pam_set_item({item}): {pam_strerror(rc)}")
        if call in ("auth", "both"):
            rc = _libpam.pam_authenticate(pamh, 0)
        if call == "acct" or (call == "both" and rc == PAM_SUCCESS):
            rc = _libpam.pam_acct_mgmt(pamh, 0)
        if call == "passwd":  # pam_chauthtok: libpam runs PRELIM_CHECK, then UPDATE_AUTHTOK
            rc = _libpam.pam_chauthtok(pamh, 0)
    finally:
        _libpam.pam_end(pamh, rc)
    return Result(rc, pam_strerror(rc), transcript, time.monotonic() - start)
