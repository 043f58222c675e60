"""A real jctotpd and a real jctotp-portal on 127.0.0.1, and an HTTP client that
behaves like a browser (cookie, Origin, the CSRF token of the last page)."""

from __future__ import annotations

import asyncio
import re
import socket
import threading
from html import unescape
from typing import Any

import requests

from pam_jctotp import config as configmod
from pam_jctotp.portal.app import Portal
from pam_jctotp.portal.sessions import COOKIE


def bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class PortalServer:
    """jctotp-portal's app on a socket bound before jctotpd started (its public_url)."""

    def __init__(self, config: dict[str, Any], sock: socket.socket) -> None:
        self.cfg = configmod.parse(config, daemon=False)
        self.sock = sock
        self.url = self.cfg.portal.public_url
        self.loop = asyncio.new_event_loop()
        self.portal = Portal(self.cfg)
        started = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(started,), daemon=True)
        self.thread.start()
        assert started.wait(10)

    def _run(self, started: threading.Event) -> None:
        from aiohttp import web
        asyncio.set_event_loop(self.loop)
        self.runner = web.AppRunner(self.portal.app(), access_log=None)
        self.loop.run_until_complete(self.runner.setup())
        self.loop.run_until_complete(web.SockSite(self.runner, self.sock).start())
        started.set()
        self.loop.run_forever()

    def stop(self) -> None:
        fut = asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop)
        fut.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Browser:
    """requests with a browser's habits: sends the __Host- cookie (requests' jar would
    not over plain HTTP), an Origin on every POST, and the page's CSRF token."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()
        self.cookie: str | None = None
        self.csrf = ""
        self.last: requests.Response | None = None

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Cookie": f"{COOKIE}={self.cookie}"} if self.cookie else {}
        headers.update(extra or {})
        return headers

    def _took(self, resp: requests.Response) -> requests.Response:
        sc = resp.headers.get("Set-Cookie", "")
        m = re.search(rf"{COOKIE}=([^;]+)", sc)
        if m:
            self.cookie = m.group(1)
        m = re.search(r'name="csrf" value="([^"]+)"', resp.text)
        if m:
            self.csrf = unescape(m.group(1))
        self.last = resp
        return resp

    def get(self, path: str, follow: bool = True) -> requests.Response:
        resp = self._took(self.http.get(self.url + path, headers=self._headers(),
                                        allow_redirects=False, timeout=30))
        if follow and resp.status_code in (302, 303):
            return self.get(resp.headers["Location"])
        return resp

    def post(self, path: str, data: dict[str, str], *, origin: str | None = "default",
             csrf: str | None = "default", follow: bool = True) -> requests.Response:
        body = dict(data)
        if csrf is not None:
            body["csrf"] = self.csrf if csrf == "default" else csrf
        extra = {}
        if origin is not None:
            extra["Origin"] = self.url if origin == "default" else origin
        resp = self._took(self.http.post(self.url + path, data=body,
                                         headers=self._headers(extra), allow_redirects=False,
                                         timeout=30))
        if follow and resp.status_code in (302, 303):
            return self.get(resp.headers["Location"])
        return resp

    def sign_in(self, name: str, password: str, code: str | None = None) -> requests.Response:
        self.get("/signin")
        resp = self.post("/signin", {"name": name, "password": password})
        if code is not None:
            assert resp.url.endswith("/code") or "Verification code" in resp.text, resp.text
            resp = self.post("/code", {"code": code})
        return resp
