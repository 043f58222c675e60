"""`jctotp doctor`'s portal and mail checks (issue 23), on fake trees and loopback."""

from __future__ import annotations

import dataclasses
import datetime
import socket
import threading
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pam_jctotp import config
from pam_jctotp.cli.doctor import Host
from pam_jctotp.cli.doctor import portal as doctor_portal


def cert_file(tmp: Path, days: int) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mfa.example.org")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=30))
            .not_valid_after(now + datetime.timedelta(days=days)).sign(key, hashes.SHA256()))
    path = tmp / "etc" / "jctotp" / f"portal-{days}.pem"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return "/etc/jctotp/" + path.name


def levels(findings) -> list[tuple[str, str]]:
    return [(f.level, f.what) for f in findings]


def portal_cfg(**keys) -> config.Config:
    return config.parse({"portal": keys}, daemon=False)


def test_nothing_to_say_without_a_portal_or_smtp(tmp_path):
    assert doctor_portal.findings(config.parse({}), Host(str(tmp_path), probe_sockets=False)) == []


def test_certificate_expiry(tmp_path):
    host = Host(str(tmp_path), probe_sockets=False)
    for days, level in ((-1, "fail"), (5, "warn"), (90, "ok")):
        cert = cert_file(tmp_path, days)
        found = doctor_portal.findings(portal_cfg(tls_cert=cert, tls_key="/k.pem"), host)
        certs = [f for f in found if "tls_cert" in f.what]
        assert [f.level for f in certs] == [level], levels(found)
    broken = tmp_path / "etc" / "jctotp" / "broken.pem"
    broken.write_text("not a certificate")
    found = doctor_portal.findings(portal_cfg(tls_cert="/etc/jctotp/broken.pem",
                                              tls_key="/k.pem"), host)
    assert any(f.level == "fail" and "PEM" in f.what for f in found)


def test_unit_missing_and_plain_http_are_named(tmp_path):
    found = doctor_portal.findings(portal_cfg(public_url="http://mfa.example.org"),
                                   Host(str(tmp_path), probe_sockets=False))
    whats = " ".join(f.what for f in found)
    assert "jctotp-portal.service is not installed" in whats and "not https" in whats
    unit = tmp_path / "lib" / "systemd" / "system" / "jctotp-portal.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\n")
    found = doctor_portal.findings(portal_cfg(public_url="https://mfa.example.org"),
                                   Host(str(tmp_path), probe_sockets=False))
    assert ("ok", "portal: unit /lib/systemd/system/jctotp-portal.service") in levels(found)


def test_listen_and_smtp_probes(tmp_path):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()   # nothing listens there now
    cfg = config.parse({"portal": {"listen": f"127.0.0.1:{port}"},
                        "smtp": {"host": "127.0.0.1", "port": port}}, daemon=False)
    found = doctor_portal.findings(cfg, Host(str(tmp_path), probe_sockets=True))
    assert [f.level for f in found if "listens" in f.what or "nothing answers" in f.what] == \
        ["fail"]
    assert [f.level for f in found if f.what.startswith("smtp:")] == ["fail"]
    # a minimal SMTP server on loopback: the probe talks to it and sends nothing
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    seen: list[bytes] = []

    def serve() -> None:
        conn, _ = srv.accept()
        f = conn.makefile("rwb")
        f.write(b"220 test\r\n")
        f.flush()
        for line in f:
            seen.append(line.split()[0].upper() if line.split() else b"")
            f.write(b"221 bye\r\n" if line.upper().startswith(b"QUIT") else b"250 ok\r\n")
            f.flush()
            if line.upper().startswith(b"QUIT"):
                break
        conn.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    cfg = dataclasses.replace(cfg, smtp=config.SmtpConfig(host="127.0.0.1",
                                                           port=srv.getsockname()[1]))
    assert doctor_portal.smtp_probe(cfg).level == "ok"
    t.join(5)
    srv.close()
    assert b"MAIL" not in seen and b"DATA" not in seen and b"EHLO" in seen


def test_the_packages_unit_alone_is_no_portal(tmp_path):
    """The .deb installs jctotp-portal.service on every host; a host that neither
    configures nor enables the portal gets no portal finding (a fresh fleet host's
    doctor failed "nothing answers on 127.0.0.1:8443"), an enabled unit does."""
    unit = tmp_path / "lib" / "systemd" / "system" / "jctotp-portal.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\n")
    host = Host(str(tmp_path), probe_sockets=True)
    assert doctor_portal.findings(config.parse({}), host) == []
    wants = tmp_path / "etc" / "systemd" / "system" / "multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "jctotp-portal.service").symlink_to("/lib/systemd/system/jctotp-portal.service")
    found = levels(doctor_portal.findings(config.parse({}), host))
    assert ("ok", "portal: unit /lib/systemd/system/jctotp-portal.service") in found
    assert any(level == "fail" and "nothing answers" in what for level, what in found), found
