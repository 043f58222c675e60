"""Client certificates for host roles (issue 22): `jctotp fleet host add|rotate
--client-cert`.

A fleet CA (an EC P-256 key and a self-signed CA certificate) is made once, on
the host where the admin runs the verb, in its state_dir (`fleet-ca.key`, 0600;
`fleet-ca.crt`); PostgreSQL trusts it through `ssl_ca_file`, and a `hostssl ...
cert` line of pg_hba.conf lets a host role in by its certificate, whose CN is the
role's name (PostgreSQL's default cert-to-role mapping). Each host gets its own
key and certificate; `fleet host remove` drops the role, so its certificate then
maps to nobody.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_KEY = "fleet-ca.key"
CA_CERT = "fleet-ca.crt"
CA_DAYS = 3650
CLIENT_DAYS = 825


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
                 mode)
    try:
        os.fchmod(fd, mode)
        os.write(fd, data)
    finally:
        os.close(fd)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def fleet_ca(where: Path, label: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The fleet CA's key and certificate in `where`, made on first use."""
    key_path, cert_path = where / CA_KEY, where / CA_CERT
    if key_path.exists() and cert_path.exists():
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ValueError(f"{key_path} is not the fleet CA's EC key")
        return loaded, x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = _name(f"jctotp fleet CA {label}")
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                         False, False), critical=True)
            .sign(key, hashes.SHA256()))
    where.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write(key_path, key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()), 0o600)
    _write(cert_path, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return key, cert


def client_cert(where: Path, label: str, role: str, out: Path) -> None:
    """out/client.key (0600), out/client.crt (CN = the role), out/fleet-ca.crt."""
    ca_key, ca_cert = fleet_ca(where, label)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(_name(role))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CLIENT_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    _write(out / "client.key", key.private_bytes(serialization.Encoding.PEM,
                                                 serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()), 0o600)
    _write(out / "client.crt", cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(out / CA_CERT, (where / CA_CERT).read_bytes(), 0o644)
