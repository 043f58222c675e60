"""`jctotp doctor`, the User Portal and mail part (issue 23): the portal's unit, its
listening socket, its TLS certificate, and the SMTP server. Never sends a mail."""

from __future__ import annotations

import datetime
import os
import shutil
import smtplib
import ssl
import subprocess

from ...config import Config, PortalConfig
from ...transport import probes
from .host import Finding, Host

UNIT = "jctotp-portal.service"
CERT_WARN_DAYS = 14
PROBE_TIMEOUT = 5.0


def findings(cfg: Config, host: Host) -> list[Finding]:
    found: list[Finding] = []
    unit = next((p for p in (host.path(f"/lib/systemd/system/{UNIT}"),
                             host.path(f"/etc/systemd/system/{UNIT}")) if os.path.exists(p)),
                None)
    # The .deb installs the unit on every host, so an installed unit is not a portal in
    # use: only a `portal:` block or the unit enabled (its WantedBy link) says so.
    enabled = os.path.lexists(host.path(f"/etc/systemd/system/multi-user.target.wants/{UNIT}"))
    in_use = enabled or cfg.portal != PortalConfig()
    if in_use:
        found.extend(_unit(host, unit))
        if host.probe_sockets:
            found.append(_listening(cfg.portal.listen))
        if cfg.portal.tls_cert:
            found.extend(certificate(host.path(cfg.portal.tls_cert), cfg.portal.tls_cert))
        elif not cfg.portal.public_url.startswith("https://"):
            found.append(Finding("warn", f"portal: public_url {cfg.portal.public_url} is not "
                                 "https: its __Host- session cookie is Secure, so browsers "
                                 "other than on the portal host itself will not keep it"))
    if cfg.smtp is not None and host.probe_sockets:
        found.append(smtp_probe(cfg))
    return found


def _unit(host: Host, unit: str | None) -> list[Finding]:
    if unit is None:
        return [Finding("warn", f"portal: portal: is configured but {UNIT} is not installed")]
    if host.root not in ("", "/") or not shutil.which("systemctl"):
        return [Finding("ok", f"portal: unit {host.shown(unit)}")]
    state = subprocess.run(["systemctl", "is-active", UNIT], capture_output=True, text=True,
                           timeout=10).stdout.strip() or "unknown"
    if state == "active":
        return [Finding("ok", f"portal: {UNIT} is active")]
    return [Finding("warn", f"portal: {UNIT} is {state} (systemctl enable --now {UNIT})")]


def _listening(listen: str) -> Finding:
    host, _, port = listen.rpartition(":")
    try:
        probes.tcp_connects(host.strip("[]"), int(port), PROBE_TIMEOUT)
        return Finding("ok", f"portal: something listens on {listen}")
    except OSError as exc:
        return Finding("fail", f"portal: nothing answers on {listen} ({exc.strerror or exc}); "
                       f"systemctl status {UNIT}")


def certificate(path: str, shown: str) -> list[Finding]:
    from cryptography import x509

    try:
        with open(path, "rb") as fh:
            cert = x509.load_pem_x509_certificate(fh.read())
    except (OSError, ValueError) as exc:
        return [Finding("fail", f"portal: tls_cert {shown} cannot be read as a PEM "
                        f"certificate: {exc}")]
    ends = getattr(cert, "not_valid_after_utc", None) or \
        cert.not_valid_after.replace(tzinfo=datetime.UTC)  # cryptography < 42
    left = ends - datetime.datetime.now(datetime.UTC)
    if left.total_seconds() <= 0:
        return [Finding("fail", f"portal: tls_cert {shown} expired on {ends:%Y-%m-%d}")]
    if left.days < CERT_WARN_DAYS:
        return [Finding("warn", f"portal: tls_cert {shown} expires on {ends:%Y-%m-%d} "
                        f"({left.days} days)")]
    return [Finding("ok", f"portal: tls_cert {shown} valid until {ends:%Y-%m-%d}")]


def smtp_probe(cfg: Config) -> Finding:
    """Connect, EHLO, STARTTLS and log in as jctotpd would; no mail."""
    assert cfg.smtp is not None
    s = cfg.smtp
    where = f"{s.host}:{s.port}"
    try:
        with smtplib.SMTP(s.host, s.port, timeout=PROBE_TIMEOUT) as smtp:
            smtp.ehlo()
            if s.starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if s.username and s.password_file:
                with open(s.password_file, encoding="utf-8") as fh:
                    smtp.login(s.username, fh.read().strip())
            smtp.noop()
    except (OSError, smtplib.SMTPException, ssl.SSLError) as exc:
        return Finding("fail", f"smtp: {where}: {exc}; mails are queued and retried, but none "
                       "goes out")
    return Finding("ok", f"smtp: {where} accepts a session"
                   + (" (STARTTLS)" if s.starttls else ""))
