"""The outage parts of the fleet store (pam_jctotp/store/outage.py), without a server:
statement deadlines on a socket pair, the breaker with a probe we script.
(tests/fleet/test_outage.py runs them against a real, stopped or frozen PostgreSQL.)"""

from __future__ import annotations

import logging
import socket
import threading
import time

import pytest

from pam_jctotp.errors import StoreUnavailable
from pam_jctotp.store.outage import Breaker, DeadlineExceeded, Deadlines


def read_one(sock: socket.socket) -> bytes:
    data = sock.recv(1)
    if not data:
        raise ConnectionError("closed")   # as the driver reports a connection shut down
    return data


def test_a_statement_past_its_deadline_has_its_socket_shut_down():
    deadlines = Deadlines()
    ours, server = socket.socketpair()
    try:
        began = time.monotonic()
        with pytest.raises(DeadlineExceeded, match="no answer within 0.3 s"), \
                deadlines.guard(ours.fileno(), 0.3):
            read_one(ours)             # the "server" never answers
        assert time.monotonic() - began < 5   # generous: the deadline is 0.3 s
    finally:
        deadlines.close()
        ours.close()
        server.close()


def test_a_statement_in_time_keeps_its_connection():
    deadlines = Deadlines()
    ours, server = socket.socketpair()
    try:
        server.send(b"x")
        with deadlines.guard(ours.fileno(), 0.3):
            assert read_one(ours) == b"x"
        time.sleep(0.5)                    # past the deadline: nothing is cut afterwards
        server.send(b"y")
        assert read_one(ours) == b"y"
    finally:
        deadlines.close()
        ours.close()
        server.close()


def test_other_errors_pass_through_unchanged():
    deadlines = Deadlines()
    try:
        with pytest.raises(ValueError), deadlines.guard(0, 5):
            raise ValueError("not a timeout")
    finally:
        deadlines.close()


def test_breaker_one_line_down_fails_at_once_one_line_back(caplog):
    answers = [False, False, True]          # the probe: down, down, back
    probed = threading.Event()

    def probe() -> None:
        ok = answers.pop(0) if answers else True
        if not answers:
            probed.set()
        if not ok:
            raise ConnectionRefusedError("connection refused")

    breaker = Breaker("db", probe, interval=0.05)
    caplog.set_level(logging.INFO, "jctotpd.store")
    try:
        breaker.check()                                   # up: nothing happens
        assert isinstance(breaker.trip("server closed the connection"), StoreUnavailable)
        for _ in range(5):
            breaker.trip("again")                         # the same outage: no new line
        with pytest.raises(StoreUnavailable):
            breaker.check()                               # fails at once while down
        assert probed.wait(5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                breaker.check()
                break
            except StoreUnavailable:
                time.sleep(0.01)
        breaker.check()                                   # back
    finally:
        breaker.close()
    lines = [r.getMessage() for r in caplog.records]
    assert [ln for ln in lines if "unavailable:" in ln] == [
        "fleet database db unavailable: server closed the connection; logins fail closed "
        "until it returns"]
    assert len([ln for ln in lines if "back after" in ln]) == 1


def test_breaker_without_a_reason_takes_the_probes(caplog):
    def probe() -> None:
        raise OSError("no route to host")

    breaker = Breaker("db", probe, interval=0.05)
    caplog.set_level(logging.INFO, "jctotpd.store")
    try:
        breaker.trip(None)                                # e.g. the pool's timeout
        deadline = time.monotonic() + 5
        while not caplog.records and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)                                   # more failed probes: no more lines
    finally:
        breaker.close()
    assert [r.getMessage() for r in caplog.records] == [
        "fleet database db unavailable: no route to host; logins fail closed until it returns"]
