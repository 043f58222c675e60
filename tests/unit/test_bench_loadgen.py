"""bench/loadgen.c, the C load generator of bench/verify_rate.py, against a tiny server.

The server (a thread on a temp Unix socket) speaks docs/protocol.md as jctotpd
does for `factors=totp`, checks each answer against the user's secret and the
clock, and misbehaves on purpose for some users. What it did must be exactly
what the client counted: every login accounted for, errors counted by kind,
none of them fatal to the run.
"""

from __future__ import annotations

import os
import socket
import socketserver
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))

import loadgen  # noqa: E402

pytestmark = pytest.mark.skipif(not loadgen.available(), reason="no C compiler (cc)")

# user name prefix -> what the server does after HELLO, as the client must count it
MISBEHAVIOUR = {"closer": "error closed early", "garbage": "error malformed frame",
                "odd": "unexpected INFO", "locked": "MAXTRIES"}


def read_frame(sock: socket.socket) -> str:
    data = b""
    while len(data) < 4 or len(data) < 4 + struct.unpack("!I", data[:4])[0]:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError("peer closed")
        data += chunk
    return data[4:].decode()


def frame(text: str) -> bytes:
    return struct.pack("!I", len(text.encode())) + text.encode()


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 256   # 50 connects at once must not meet a full backlog

    def __init__(self, path: str, totps: dict[str, pyotp.TOTP]) -> None:
        self.totps = totps
        self.path = path
        self.seen: Counter = Counter()
        self.lock = threading.Lock()
        super().__init__(path, Handler)

    def record(self, outcome: str) -> None:
        with self.lock:
            self.seen[outcome] += 1


class Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        server: Server = self.server  # type: ignore[assignment]
        sock: socket.socket = self.request
        hello = read_frame(sock).split("\n")
        assert hello[0] == "HELLO JCTOTP/1" and "factors=totp" in hello
        user = dict(line.split("=", 1) for line in hello[1:] if line)["user"]
        kind = next((k for k in MISBEHAVIOUR if user.startswith(k)), None)
        if kind:
            server.record(MISBEHAVIOUR[kind])
        if kind == "closer":
            return
        if kind == "garbage":
            sock.sendall(b"\xff\xff\xff\xffnot a frame")
            return
        if kind == "odd":
            sock.sendall(frame("INFO not a prompt"))
            return
        sock.sendall(frame("PROMPT_OFF Verification code: "))
        code = read_frame(sock).removeprefix("ANSWER ")
        if kind == "locked":
            verdict = "MAXTRIES"
        else:
            verdict = "SUCCESS" if server.totps[user].verify(code, valid_window=1) else "AUTH_ERR"
            server.record(verdict)
        sock.sendall(frame(f"VERDICT {verdict}"))


@pytest.fixture()
def users() -> list[tuple[str, str]]:
    # 11 users: with 2 sockets taken in turn, every user meets each of them
    names = [f"good{i}" for i in range(7)] + ["closer0", "garbage0", "odd0", "locked0"]
    return [(n, pyotp.TOTP(pyotp.random_base32()).provisioning_uri(name=n, issuer_name="t"))
            for n in names]


@pytest.fixture()
def server(tmp_path: Path, users: list[tuple[str, str]]) -> Iterator[Server]:
    srv = Server(str(tmp_path / "pam.sock"), {n: loadgen.totp_of(u) for n, u in users})
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """This module builds loadgen.c itself, once: the build is part of what is tested."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(cache))
        yield cache


def everything(report: dict) -> Counter:
    """Every login the client saw end, inside the measured window or not."""
    return Counter(report["verdicts"]) + Counter(report["outside"])


def test_it_compiles_cleanly_with_strict_warnings(tmp_path: Path, private_cache: Path) -> None:
    flags = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-Wformat=2", "-Wshadow",
             "-Wconversion", "-Wstrict-prototypes"]
    build = subprocess.run(["cc", *flags, "-o", str(tmp_path / "lg"), str(loadgen.SOURCE)],
                           capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    assert loadgen.binary().parent == private_cache / "jctotp-bench"


@pytest.mark.parametrize(("mode", "verdict"), [("current", "SUCCESS"), ("wrong", "AUTH_ERR")])
def test_a_closed_loop_counts_every_login_the_server_answered(
        server: Server, users: list[tuple[str, str]], mode: str, verdict: str) -> None:
    report = loadgen.run([server.path], users, mode, connections=10,
                         seconds=0.3, warmup=0.1)
    seen = everything(report)
    assert report["loop"] == "closed"
    assert seen == server.seen   # errors included: counted, not fatal
    assert set(seen) == {verdict, "MAXTRIES", *list(MISBEHAVIOUR.values())[:3]}
    window = Counter(report["verdicts"])
    assert window[verdict] > 0 and report["done_in_window"] == window[verdict]
    assert len(report["latencies"]) == sum(window.values())
    assert all(0 < lat < 10 for lat in report["latencies"])
    assert report["client_cpu_s"] >= 0 and 0 < report["wall_s"] < 10


def test_an_open_loop_runs_the_schedule_and_counts_errors_by_kind(
        server: Server, users: list[tuple[str, str]], tmp_path: Path) -> None:
    missing = str(tmp_path / "nobody-listens.sock")   # every other login: ENOENT
    rate, warmup, seconds = 400.0, 0.25, 0.25   # exact in binary: 200 logins
    report = loadgen.run([server.path, missing], users, "wrong", connections=50,
                         seconds=seconds, warmup=warmup, rate=rate,
                         start_at=time.monotonic() + 0.1)
    seen = everything(report)
    assert report["loop"] == "open"
    assert sum(seen.values()) == round(rate * (warmup + seconds))   # each scheduled login once
    started = sum(seen.values()) - seen["shed"]
    assert seen.pop("error connect ENOENT") == started // 2
    seen.pop("shed", None)
    assert seen == server.seen
    window = Counter(report["verdicts"])
    assert sum(window.values()) == round(rate * seconds)   # the logins scheduled in the window
    assert len(report["latencies"]) == sum(window.values()) - window["shed"]
    assert 0 < report["done_in_window"] <= seen["AUTH_ERR"]
    assert 0 < report["wall_s"] < 10   # the window's, not up to the last verdict


def test_the_codes_come_from_each_secret_and_the_clock() -> None:
    secret = pyotp.random_base32()
    uri = pyotp.TOTP(secret).provisioning_uri(name="alice", issuer_name="t")
    now = 1_000_000_017.0   # 17 s into a step
    totp = pyotp.TOTP(secret)
    current = loadgen.codes_text([("alice", uri)], "current", span=60, now=now).split("\n")
    assert current[0] == "1000000020 30"   # column 1 begins at the next step
    name, *codes = current[1].split()
    assert name == "alice" and len(codes) >= 3
    assert codes == [totp.at(999_999_990 + 30 * c) for c in range(len(codes))]
    wrong = loadgen.codes_text([("alice", uri)], "wrong", span=60, now=now).split("\n")
    for c, code in enumerate(wrong[1].split()[1:]):
        assert not totp.verify(code, for_time=999_999_990 + 30 * c, valid_window=1)


@pytest.mark.parametrize("client", ["c", "python"])
def test_verify_rate_keeps_its_return_shapes_with_either_client(
        server: Server, users: list[tuple[str, str]], client: str) -> None:
    """bench/compare_ga.py and bench/fleet_rate.py import measure and measure_open."""
    import verify_rate

    good = [u for u in users if u[0].startswith("good")]   # the asyncio client stops at errors
    counts, latencies = verify_rate.measure([server.path], good, "wrong", 4, 2, 0.3, 0.1,
                                            client=client)
    assert set(counts) == {"AUTH_ERR"} and len(latencies) == counts["AUTH_ERR"] > 0
    run = verify_rate.measure_open([server.path], good, "current", 200, 10, 2, 0.3, 0.1,
                                   os.getpid(), client=client)
    assert run["client"] == client and run["client_cores"] >= 0 and run["cores"] >= 0
    assert set(run["verdicts"]) <= {"SUCCESS", "AUTH_ERR", "shed"}
    assert run["verdicts"]["SUCCESS"] > 0   # the codes of the current step
    assert len(run["latencies"]) == sum(run["verdicts"].values()) - run["verdicts"]["shed"]
