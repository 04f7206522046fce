"""Development TLS: a local CA and a server certificate, made on first start and reused after."""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TlsFiles:
    certfile: Path
    keyfile: Path
    cafile: Path | None
    generated: bool


def write_private(path: Path, data: bytes) -> None:
    """Create a file only its owner can read, from the first byte (no chmod after the fact)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    write_private(
        path,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )


def _san(hostnames: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for name in hostnames:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            names.append(x509.DNSName(name))
    return x509.SubjectAlternativeName(names)


def generate(certs_dir: Path, hostnames: list[str]) -> None:
    """Write ca.crt/ca.key and server.crt/server.key, RFC 5280-clean (Python 3.13 checks strictly)."""
    certs_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC) - timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Gatehouse development CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostnames[0] if hostnames else "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=825))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(_san(hostnames or ["localhost"]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write_key(certs_dir / "ca.key", ca_key)
    (certs_dir / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_key(certs_dir / "server.key", key)
    (certs_dir / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ensure(certs_dir: Path, hostnames: list[str], certfile: str = "", keyfile: str = "", cafile: str = "") -> TlsFiles:
    """Configured certificates win; otherwise the development ones, generated once."""
    if certfile or keyfile:
        if not (certfile and keyfile):
            raise ValueError("tls.certfile and tls.keyfile must be set together")
        for key, value in (("tls.certfile", certfile), ("tls.keyfile", keyfile), ("tls.cafile", cafile)):
            if value and not Path(value).is_file():
                raise ValueError(f"{key}: no such file: {value}")
        return TlsFiles(Path(certfile), Path(keyfile), Path(cafile) if cafile else None, generated=False)
    crt, key, ca = certs_dir / "server.crt", certs_dir / "server.key", certs_dir / "ca.crt"
    generated = not (crt.exists() and key.exists() and ca.exists())
    if generated:
        generate(certs_dir, hostnames)
        log.info("generated a development CA and server certificate in %s", certs_dir)
    return TlsFiles(crt, key, ca, generated)
