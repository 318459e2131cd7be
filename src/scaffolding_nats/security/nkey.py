"""NATS user nkeys: an Ed25519 key pair in NATS's text encoding, so an identity can log in with
a private seed that never reaches the server (the server holds only the public ``U...`` key).

The encoding (github.com/nats-io/nkeys): base32 without padding of a prefix byte (``U``: user),
the 32-byte key and a CRC-16/XMODEM of both, little-endian; a seed carries two prefix bytes
(``S`` then the key type) and the 32-byte Ed25519 seed. Keys are made with ``cryptography``
(the ``identity`` extra); nats-py logs in with a seed only where the ``nkeys`` package is
installed, nats.js always can (``nkeyAuthenticator``).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from ..proto.errors import ErrorCode, ScaffoldingError

_USER = 20 << 3  # "U"
_SEED = 18 << 3  # "S"


class NkeyError(ScaffoldingError, ValueError):
    """A seed or public key that is not a well-formed NATS user nkey."""

    code = ErrorCode.INVALID


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def _encode(raw: bytes) -> str:
    return base64.b32encode(raw + _crc16(raw).to_bytes(2, "little")).decode().rstrip("=")


def _decode(text: str) -> bytes:
    try:
        raw = base64.b32decode(text + "=" * (-len(text) % 8))
    except ValueError as exc:
        raise NkeyError(f"not base32: {exc}") from None
    if len(raw) < 3 or _crc16(raw[:-2]) != int.from_bytes(raw[-2:], "little"):
        raise NkeyError("bad checksum")
    return raw[:-2]


@dataclass(frozen=True)
class UserKey:
    public: str  # "U...": goes into the server config
    seed: str  # "SU...": the private part, handed to the client only

    def __repr__(self) -> str:  # never print the seed
        return f"UserKey(public={self.public!r})"


def _public_from_raw_seed(raw_seed: bytes) -> str:
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
    except ImportError:  # pragma: no cover - depends on the environment
        raise NkeyError("nkeys need the cryptography package: pip install 'scaffolding-nats[identity]'") from None
    public = Ed25519PrivateKey.from_private_bytes(raw_seed).public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return _encode(bytes([_USER]) + public)


def new_user_key() -> UserKey:
    import secrets

    raw_seed = secrets.token_bytes(32)
    seed = _encode(bytes([_SEED | (_USER >> 5), (_USER & 31) << 3]) + raw_seed)
    return UserKey(public=_public_from_raw_seed(raw_seed), seed=seed)


def from_seed(seed: str) -> UserKey:
    raw = _decode(seed.strip())
    kind, role = raw[0] & 0xF8, ((raw[0] & 7) << 5) | ((raw[1] & 0xF8) >> 3)
    if kind != _SEED or role != _USER or len(raw) != 34:
        raise NkeyError("not a user seed (SU...)")
    return UserKey(public=_public_from_raw_seed(raw[2:]), seed=seed.strip())


def check_public(key: str) -> str:
    """``key`` if it is a user's public nkey (``U...``), else an ``NkeyError``."""
    raw = _decode(key)
    if raw[0] != _USER or len(raw) != 33:
        raise NkeyError(f"{key!r} is not a user public key (U...)")
    return key
