"""The emulator's own CA and a server certificate signed by it (made once, kept in the state dir).

    DIR/ca.pem          the CA certificate: give it to the node as `cloud.ca_cert_file`
    DIR/server.pem      the server certificate, SAN: every name/address the emulator is reached by
    DIR/server.key      its key (never leaves DIR)
A server certificate whose SAN lacks a requested name is made again.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

_VALID = dt.timedelta(days=3650)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _san(names: list[str]) -> x509.SubjectAlternativeName:
    entries = []
    for n in dict.fromkeys(names):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            entries.append(x509.DNSName(n))
    return x509.SubjectAlternativeName(entries)


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _sign(subject: str, issuer: x509.Name, public_key, signing_key, *, ca: bool, san=None) -> x509.Certificate:
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer).public_key(public_key)
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
               .not_valid_after(now + _VALID)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if san is not None:
        builder = builder.add_extension(san, critical=False)
    if ca:
        builder = builder.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                                        critical=True)
    return builder.sign(signing_key, hashes.SHA256())


def ensure_certificates(state_dir: Path, names: list[str]) -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key) in `state_dir`, made if missing or not covering `names`."""
    ca_pem, ca_key_pem = state_dir / "ca.pem", state_dir / "ca.key"
    cert_pem, key_pem = state_dir / "server.pem", state_dir / "server.key"
    if ca_pem.exists() and ca_key_pem.exists():
        ca_cert = x509.load_pem_x509_certificate(ca_pem.read_bytes())
        ca_key = serialization.load_pem_private_key(ca_key_pem.read_bytes(), None)
    else:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = _sign("BESS IoT Hub emulator CA", _name("BESS IoT Hub emulator CA"), ca_key.public_key(), ca_key,
                        ca=True)
        ca_key_pem.write_bytes(_pem_key(ca_key))
        ca_key_pem.chmod(0o600)
        ca_pem.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    san = _san(names)
    if cert_pem.exists() and key_pem.exists():
        have = x509.load_pem_x509_certificate(cert_pem.read_bytes())
        ext = have.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        if have.issuer == ca_cert.subject and set(san) <= set(ext):
            return ca_pem, cert_pem, key_pem
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _sign(names[0], ca_cert.subject, key.public_key(), ca_key, ca=False, san=san)
    key_pem.write_bytes(_pem_key(key))
    key_pem.chmod(0o600)
    cert_pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return ca_pem, cert_pem, key_pem
