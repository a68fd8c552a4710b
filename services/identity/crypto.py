"""Encryption at rest for the secrets identity keeps: mini-program ``session_key``\\s.

AES-256-GCM with a key derived by HKDF-SHA256 from ``IDENTITY_DATA_KEY`` (or, when that is not set,
``SIYU_SESSION_SECRET``). The associated data binds a ciphertext to its row (appid and openid), so a
ciphertext copied onto another identity's row does not decrypt. Stored as
``version (1 byte) || nonce (12) || ciphertext+tag``; the version byte leaves room for a key rotation.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shared.errors import SiyuError

_VERSION = b"\x01"
_NONCE_BYTES = 12
_INFO = b"siyu identity data key v1"


class DataKeyError(SiyuError):
    """A stored secret could not be decrypted (wrong key, tampered, or bound to another row)."""


class DataVault:
    def __init__(self, secret: str) -> None:
        if len(secret) < 32:
            raise ValueError("the identity data key needs at least 32 characters")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO).derive(secret.encode())
        self._aead = AESGCM(key)

    def seal(self, plaintext: str, *, bound_to: str) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return _VERSION + nonce + self._aead.encrypt(nonce, plaintext.encode(), bound_to.encode())

    def open(self, sealed: bytes, *, bound_to: str) -> str:
        if len(sealed) < 1 + _NONCE_BYTES + 16 or sealed[:1] != _VERSION:
            raise DataKeyError("not a sealed value of a known version")
        nonce, body = sealed[1 : 1 + _NONCE_BYTES], sealed[1 + _NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, bound_to.encode()).decode()
        except InvalidTag:
            raise DataKeyError("the sealed value does not decrypt with this key for this row") from None


def session_key_binding(appid: str, openid: str) -> str:
    return f"session_key:{appid}:{openid}"
