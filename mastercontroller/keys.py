"""CurveZMQ key files for the cluster.

A node keeps its CURVE key pair in one directory:

- ``cluster.key_secret``  the Z85 secret key (40 characters), mode 0600;
- ``cluster.key``         the Z85 public key (40 characters), shared with the other members.

``generate(dir)`` writes both and returns the public key; ``load(dir)`` reads them back and
raises ``KeyError`` (a file is missing) or ``ValueError`` (a file is damaged) with a message
that names the file; ``check_public(text)`` validates a member's public key from a parameter file.
"""
from __future__ import annotations

import os
from pathlib import Path

import zmq
from zmq.utils import z85

SECRET_FILE = "cluster.key_secret"
PUBLIC_FILE = "cluster.key"
Z85_LEN = 40  # a 32-byte CURVE key in Z85
_Z85_ALPHABET = frozenset(
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#"
)


def _check_z85(text: str, what: str) -> str:
    if not isinstance(text, str):
        raise ValueError(f"{what}: expected a Z85 string of {Z85_LEN} characters, got {type(text).__name__}")
    text = text.strip()
    if len(text) != Z85_LEN:
        raise ValueError(f"{what}: a CURVE key is {Z85_LEN} Z85 characters, got {len(text)}")
    bad = sorted(set(text) - _Z85_ALPHABET)
    if bad:
        raise ValueError(f"{what}: not Z85 (characters {''.join(bad)!r} are not allowed)")
    try:
        raw = z85.decode(text.encode("ascii"))
    except Exception as e:  # noqa: BLE001 - any decoding error is a damaged key
        raise ValueError(f"{what}: not a valid Z85 key ({e})") from None
    if len(raw) != 32:
        raise ValueError(f"{what}: decodes to {len(raw)} bytes, a CURVE key has 32")
    return text


def check_public(text: str) -> str:
    """Validate a Z85 public key (40 characters); return it stripped, or raise ValueError."""
    return _check_z85(text, "cluster public key")


def generate(directory) -> str:
    """Create a new key pair in `directory` (created if missing); return the Z85 public key.

    The secret file is created with mode 0600 before any byte of the key is written to it.
    Existing files are replaced.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.curve_keypair()
    secret_path = d / SECRET_FILE
    tmp = secret_path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, secret + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, secret_path)
    public_path = d / PUBLIC_FILE
    tmp = public_path.with_suffix(".tmp")
    tmp.write_bytes(public + b"\n")
    os.replace(tmp, public_path)
    return public.decode("ascii")


def _read(path: Path, what: str) -> str:
    if not path.is_file():
        raise KeyError(f"{what} file {path} is missing (create the key pair with keys.generate / "
                       f"'sitecontroller cluster keygen')")
    try:
        text = path.read_text(encoding="ascii")
    except UnicodeDecodeError:
        raise ValueError(f"{what} file {path} is damaged: not ASCII text") from None
    return _check_z85(text, f"{what} file {path}")


def load(directory) -> tuple[str, str]:
    """Return (public, secret) Z85 keys from `directory`.

    Raises KeyError if a file is missing, ValueError if a file is damaged or the two
    keys do not belong together.
    """
    d = Path(directory)
    secret = _read(d / SECRET_FILE, "cluster secret key")
    public = _read(d / PUBLIC_FILE, "cluster public key")
    derived = zmq.curve_public(secret.encode("ascii")).decode("ascii")
    if derived != public:
        raise ValueError(f"cluster key files in {d} do not match: {PUBLIC_FILE} is not the public key "
                         f"of {SECRET_FILE}")
    return public, secret
