"""jctotp-portal's pages: aiohttp + jinja2, every decision asked of jctotpd.

    jctotp-portal --config /etc/jctotp/config.yaml

Security of the pages, in one place (the middleware below):
- a server-side session behind an opaque `__Host-` cookie (Secure, HttpOnly,
  SameSite=Strict), a new id at each sign-in (no fixation);
- every POST needs the session's CSRF token AND an Origin equal to
  `portal.public_url`'s (a form without Origin is refused too);
- CSP without inline script or style, X-Frame-Options DENY, nosniff, no
  referrer to another site (the reset link is in the URL), Cache-Control no-store everywhere
  (pages show keys and recovery codes);
- jinja2 autoescape for every page; the daemon audits each action with the
  browser's address.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import jinja2
import segno
from aiohttp import web

from .. import config as configmod
from ..errors import ConfigError, ServiceUnavailable
from ..model import ExitCode
from . import daemon_client
from .daemon_client import Reply
from .sessions import COOKIE, Sessions, WebSession

log = logging.getLogger("jctotp-portal")
HERE = os.path.dirname(__file__)

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src 'self'; style-src 'self'; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer a browser sends `Origin: null` on
    # our own forms; no other site ever gets the reset link of the URL.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Server": "jctotp-portal",   # not aiohttp's name and version
}
# Where a proof (a fresh code) may send the browser back to.
NEXT_PAGES = ("/reset-phone", "/recovery-codes", "/password")

# Per-request state (aiohttp >= 3.10 wants typed keys; Debian 12's 3.8 has none).
_key: Any = getattr(web, "RequestKey", None)
WS: Any = _key("ws", WebSession) if _key else "ws"
SID: Any = _key("sid", str) if _key else "sid"
SET_SID: Any = _key("set_sid", str) if _key else "set_sid"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class Portal:
    def __init__(self, cfg: configmod.Config) -> None:
        self.cfg = cfg
        p = cfg.portal
        self.origin = origin_of(p.public_url)
        self.sessions = Sessions(p.session_idle_minutes * 60.0, p.session_lifetime_minutes * 60.0)
        self.env = jinja2.Environment(loader=jinja2.FileSystemLoader(os.path.join(HERE,
                                                                                  "templates")),
                                      autoescape=True, undefined=jinja2.StrictUndefined)

    # --- plumbing -------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self.guard], client_max_size=64 * 1024)
        r = app.router
        r.add_get("/", self.home)
        r.add_get("/signin", self.signin_page)
        r.add_post("/signin", self.signin)
        r.add_get("/code", self.code_page)
        r.add_post("/code", self.code)
        r.add_post("/signout", self.signout)
        r.add_get("/enroll", self.enroll_page)
        r.add_post("/enroll", self.confirm)
        r.add_get("/qr.png", self.qr_png)
        r.add_post("/prove", self.prove)
        r.add_get("/reset-phone", self.reset_phone)
        r.add_get("/recovery-codes", self.recovery_page)
        r.add_post("/recovery-codes", self.recovery_codes)
        r.add_get("/password", self.password_page)
        r.add_post("/password", self.password)
        r.add_get("/forgot", self.forgot_page)
        r.add_post("/forgot", self.forgot)
        r.add_get("/reset/{token}", self.reset_page)
        r.add_post("/reset/{token}", self.reset)
        r.add_static("/static", os.path.join(HERE, "static"))
        return app

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        sid = request.cookies.get(COOKIE)
        ws = self.sessions.get(sid)
        new_sid = None
        if request.method == "POST":
            if request.headers.get("Origin") != self.origin:
                log.warning("refused a POST to %s from %s: Origin %r is not %s", request.path,
                            request.remote, request.headers.get("Origin"), self.origin)
                return self._forbidden("This form came from another site.")
            form = await request.post()
            token = form.get("csrf")
            if ws is None or not isinstance(token, str) or not ws.csrf_ok(token):
                log.warning("refused a POST to %s from %s: no or wrong CSRF token",
                            request.path, request.remote)
                return self._forbidden("This form has expired; reload the page and try again.")
        elif ws is None:
            new_sid, ws = self.sessions.new()
        request[WS] = ws
        request[SID] = sid if new_sid is None else new_sid
        try:
            response = await handler(request)
        except ServiceUnavailable as exc:
            log.error("%s", exc)
            response = self.page(request, "message.html", status=503,
                                 title="Try again later",
                                 message="The MFA service does not answer; try again later.")
        except web.HTTPException as exc:  # redirects: a plain response, to add headers to
            response = web.Response(status=exc.status, headers={
                k: v for k, v in exc.headers.items() if k in ("Location", "Content-Type")},
                text=exc.text)
        if request.get(SET_SID):
            new_sid = request[SET_SID]
        if new_sid is not None:
            response.set_cookie(COOKIE, new_sid, secure=True, httponly=True, samesite="Strict",
                                path="/")
        for key, value in SECURITY_HEADERS.items():
            if key == "Server" or key not in response.headers:
                response.headers[key] = value
        return response

    def _forbidden(self, text: str) -> web.Response:
        resp = web.Response(status=403, text=text, content_type="text/plain")
        resp.headers.update(SECURITY_HEADERS)
        return resp

    def page(self, request: web.Request, template: str, status: int = 200,
             **values: Any) -> web.Response:
        ws: WebSession = request[WS]
        flash, ws.flash = ws.flash, ""
        values.setdefault("title", "")
        html = self.env.get_template(template).render(csrf=ws.csrf, flash=flash,
                                                      signed_in=ws.daemon is not None, **values)
        return web.Response(text=html, content_type="text/html", status=status)

    @staticmethod
    def redirect(path: str) -> web.Response:
        return web.Response(status=303, headers={"Location": path})

    async def ask(self, request: web.Request, verb: str, **args: Any) -> Reply:
        ws: WebSession = request[WS]
        args["address"] = request.remote or ""
        if ws.daemon is not None and "session" not in args:
            args["session"] = ws.daemon
        reply = await daemon_client.ask(self.cfg.control_socket, verb, args)
        if reply.exit == ExitCode.PERMISSION and verb not in ("portal.signin",
                                                              "portal.forgot"):
            ws.daemon = None  # jctotpd ended the session (idle, lifetime, sign-out)
            ws.flash = reply.message
            raise web.HTTPSeeOther("/signin")
        return reply

    @staticmethod
    async def form(request: web.Request) -> dict[str, str]:
        data = await request.post()
        return {k: v for k, v in data.items() if isinstance(v, str)}

    def signed_in(self, request: web.Request) -> WebSession:
        ws: WebSession = request[WS]
        if ws.daemon is None:
            raise web.HTTPSeeOther("/signin")
        return ws

    # --- sign-in ----------------------------------------------------------------

    async def signin_page(self, request: web.Request) -> web.Response:
        return self.page(request, "signin.html", title="Sign in")

    async def signin(self, request: web.Request) -> web.StreamResponse:
        f = await self.form(request)
        reply = await self.ask(request, "portal.signin", name=f.get("name", ""),
                               password=f.get("password", ""))
        if not reply.ok:
            return self.page(request, "signin.html", status=401, title="Sign in",
                             error=reply.message, name=f.get("name", ""))
        # A new cookie id at sign-in: an id planted before it is worth nothing.
        self.sessions.drop(request[SID])
        sid, ws = self.sessions.new()
        ws.daemon = reply.data["session"]
        request[WS], request[SET_SID] = ws, sid
        return self.redirect({"code": "/code", "enroll": "/enroll"}.get(reply.data["next"], "/"))

    async def code_page(self, request: web.Request) -> web.Response:
        self.signed_in(request)
        return self.page(request, "code.html", title="Verification code")

    async def code(self, request: web.Request) -> web.StreamResponse:
        self.signed_in(request)
        f = await self.form(request)
        reply = await self.ask(request, "portal.code", code=f.get("code", ""))
        if not reply.ok:
            request[WS].daemon = None
            request[WS].flash = reply.message
            return self.redirect("/signin")
        return self.redirect("/")

    async def signout(self, request: web.Request) -> web.StreamResponse:
        ws: WebSession = request[WS]
        if ws.daemon is not None:
            await self.ask(request, "portal.signout")
        self.sessions.drop(request[SID])
        return self.redirect("/signin")

    # --- pages ----------------------------------------------------------------------

    async def home(self, request: web.Request) -> web.StreamResponse:
        self.signed_in(request)
        reply = await self.ask(request, "portal.status")
        if not reply.ok:
            raise web.HTTPSeeOther("/signin")
        return self.page(request, "home.html", title="Your account", user=reply.data)

    async def enroll_page(self, request: web.Request) -> web.StreamResponse:
        self.signed_in(request)
        if request.query.get("step") != "scan":
            return self.page(request, "enroll_app.html", title="Set up your authenticator")
        reply = await self.ask(request, "portal.enroll")
        if not reply.ok:
            if (reply.data or {}).get("need_code"):
                return self.redirect("/reset-phone")
            return self.page(request, "message.html", title="Authenticator",
                             message=reply.message)
        return self.page(request, "enroll.html", title="Scan the QR code", key=reply.data["key"],
                         reset=reply.data["reset"], qr_stamp=int(time.time()))

    async def qr_png(self, request: web.Request) -> web.StreamResponse:
        self.signed_in(request)
        reply = await self.ask(request, "portal.enroll")
        if not reply.ok:
            return web.Response(status=404)
        buf = io.BytesIO()
        segno.make(reply.data["otpauth_uri"], error="m").save(buf, kind="png", scale=6, border=4)
        return web.Response(body=buf.getvalue(), content_type="image/png")

    async def confirm(self, request: web.Request) -> web.StreamResponse:
        self.signed_in(request)
        f = await self.form(request)
        reply = await self.ask(request, "portal.confirm", code=f.get("code", ""))
        return self.codes_page(request, reply, "/enroll?step=scan")

    async def prove(self, request: web.Request) -> web.StreamResponse:
        self.signed_in(request)
        f = await self.form(request)
        target = f.get("next", "/")
        target = target if target in NEXT_PAGES else "/"
        reply = await self.ask(request, "portal.prove", code=f.get("code", ""))
        if not reply.ok:
            request[WS].flash = reply.message
        return self.redirect(target)

    async def _fresh(self, request: web.Request) -> dict[str, Any]:
        reply = await self.ask(request, "portal.status")
        data: dict[str, Any] = reply.data or {}
        return data

    async def reset_phone(self, request: web.Request) -> web.StreamResponse:
        self.signed_in(request)
        status = await self._fresh(request)
        if status.get("mfa") != "active":
            return self.redirect("/enroll")
        return self.page(request, "reset_phone.html", title="Reset to a new phone",
                         fresh=status.get("fresh_code"))

    async def recovery_page(self, request: web.Request) -> web.StreamResponse:
        self.signed_in(request)
        status = await self._fresh(request)
        return self.page(request, "recovery.html", title="New recovery codes",
                         fresh=status.get("fresh_code"), left=status.get("recovery_codes_left"))

    async def recovery_codes(self, request: web.Request) -> web.StreamResponse:
        self.signed_in(request)
        reply = await self.ask(request, "portal.recovery-codes")
        return self.codes_page(request, reply, "/recovery-codes")

    def codes_page(self, request: web.Request, reply: Reply, back: str) -> web.Response:
        """New recovery codes, shown once (no-store); or back to `back` with why not."""
        if not reply.ok:
            request[WS].flash = reply.message
            return self.redirect(back)
        return self.page(request, "codes.html", title="Your recovery codes",
                         message=reply.message, codes=reply.data["recovery_codes"])

    async def password_page(self, request: web.Request) -> web.StreamResponse:
        self.signed_in(request)
        status = await self._fresh(request)
        return self.page(request, "password.html", title="Change your password",
                         needs_code=status.get("mfa") == "active" and not status.get(
                             "fresh_code"))

    async def password(self, request: web.Request) -> web.StreamResponse:
        self.signed_in(request)
        f = await self.form(request)
        if f.get("new_password") != f.get("again"):
            request[WS].flash = "The two new passwords differ; nothing was changed."
            return self.redirect("/password")
        if f.get("code"):
            proof = await self.ask(request, "portal.prove", code=f["code"])
            if not proof.ok:
                request[WS].flash = proof.message
                return self.redirect("/password")
        reply = await self.ask(request, "portal.passwd", password=f.get("password", ""),
                               new_password=f.get("new_password", ""))
        if not reply.ok:
            request[WS].flash = reply.message
            return self.redirect("/password")
        return self.page(request, "message.html", title="Password changed",
                         message=reply.message)

    # --- forgotten password -------------------------------------------------------------

    async def forgot_page(self, request: web.Request) -> web.Response:
        return self.page(request, "forgot.html", title="Forgot your password?")

    async def forgot(self, request: web.Request) -> web.Response:
        f = await self.form(request)
        reply = await self.ask(request, "portal.forgot", login=f.get("login", ""))
        return self.page(request, "message.html", title="Forgot your password?",
                         message=reply.message)

    async def reset_page(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        reply = await self.ask(request, "portal.reset-check", token=token)
        if not reply.ok:
            return self.page(request, "message.html", status=410, title="Reset link",
                             message=reply.message)
        return self.page(request, "reset.html", title="Choose a new password",
                         token=token, needs_code=reply.data["needs_code"])

    async def reset(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        f = await self.form(request)
        if f.get("new_password") != f.get("again"):
            reply = Reply(ExitCode.USAGE, "The two new passwords differ; nothing was changed.")
        else:
            reply = await self.ask(request, "portal.reset", token=token, code=f.get("code", ""),
                                   new_password=f.get("new_password", ""))
        if reply.ok:
            return self.page(request, "message.html", title="Password changed",
                             message=reply.message)
        check = await self.ask(request, "portal.reset-check", token=token)
        if not check.ok:
            return self.page(request, "message.html", status=410, title="Reset link",
                             message=reply.message)
        return self.page(request, "reset.html", status=400, title="Choose a new password",
                         token=token, needs_code=check.data["needs_code"], error=reply.message)


def listen_address(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def tls_context(cfg: configmod.Config) -> ssl.SSLContext | None:
    if not cfg.portal.tls_cert or not cfg.portal.tls_key:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cfg.portal.tls_cert, cfg.portal.tls_key)
    return ctx


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jctotp-portal",
                                     description="the pam_jctotp User Portal (a web client "
                                     "of jctotpd)")
    parser.add_argument("--config", default=configmod.DEFAULT_PATH)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    try:
        cfg = configmod.load(args.config, daemon=False)
        ctx = tls_context(cfg)
    except (ConfigError, OSError, ssl.SSLError) as exc:
        print(f"jctotp-portal: {exc}", file=sys.stderr)
        return ExitCode.CONFIG
    host, port = listen_address(cfg.portal.listen)
    log.info("serving %s on %s:%d (%s); jctotpd at %s", cfg.portal.public_url, host, port,
             "TLS" if ctx else "plain HTTP for a reverse proxy", cfg.control_socket)
    web.run_app(Portal(cfg).app(), host=host, port=port, ssl_context=ctx, print=None,
                access_log=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
