"""WeChat callback signatures and the AES "safe mode" envelope (research/wechat.md §1.3).

One algorithm serves the official account, the mini-program and WeChat Shop: AES-256-CBC with
IV = key[:16], plaintext ``random(16) || uint32_be(len) || msg || appid``, PKCS#7 to 32 bytes.
Unlike most SDKs we check the pad, the length field and the trailing appid, and fail with a typed
error naming which one was wrong.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import struct
from dataclasses import dataclass
from xml.sax.saxutils import escape

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from shared.errors import BadRequest, ConfigurationError, Unauthorized
from shared.wechat.apps import WeChatApp

# WeChat pads to 32 bytes (not the AES block size); a pad byte outside 1..32 means a wrong key
# or corrupted ciphertext.
_PAD_TO = 32
_RANDOM_LEN = 16
_HEADER_LEN = _RANDOM_LEN + 4


class InvalidSignature(Unauthorized):
    title = "Invalid signature"


class MalformedPush(BadRequest):
    type_slug = "malformed-push"
    title = "Malformed WeChat push"


class BadBase64(MalformedPush):
    pass


class BadPadding(MalformedPush):
    pass


class BadLength(MalformedPush):
    pass


class AppIdMismatch(MalformedPush):
    pass


class BadKey(MalformedPush):
    pass


def sign(token: str, timestamp: str, nonce: str, *extra: str) -> str:
    """sha1 over the sorted strings, no delimiter: ``signature`` and, with extra=(Encrypt,), ``msg_signature``."""
    joined = "".join(sorted((token, timestamp, nonce, *extra)))
    return hashlib.sha1(joined.encode()).hexdigest()  # noqa: S324 - SHA-1 is fixed by WeChat's protocol


def verify_signature(signature: str, token: str, timestamp: str, nonce: str, *extra: str) -> None:
    expected = sign(token, timestamp, nonce, *extra)
    # Compare bytes: compare_digest raises TypeError on non-ASCII str, and the signature is attacker-chosen.
    if not hmac.compare_digest(signature.encode(), expected.encode()):
        raise InvalidSignature("the signature does not match the callback token")


@dataclass(frozen=True)
class Decrypted:
    plaintext: bytes
    key_index: int  # 0 = current EncodingAESKey, 1 = previous one (key rotation)


def _aes_key(encoding_aes_key: str) -> bytes:
    # The 43-character EncodingAESKey is base64 with its single "=" dropped.
    if len(encoding_aes_key) != 43:
        raise BadKey(f"an EncodingAESKey is 43 characters, not {len(encoding_aes_key)}")
    try:
        return base64.b64decode(encoding_aes_key + "=", validate=True)
    except (binascii.Error, ValueError):
        raise BadKey("an EncodingAESKey must consist of base64 characters only") from None


def _cipher(key: bytes) -> Cipher[modes.CBC]:
    return Cipher(algorithms.AES(key), modes.CBC(key[:16]))


def _cdata(text: str) -> str:
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


class MessageCrypto:
    def __init__(
        self,
        token: str,
        encoding_aes_key: str,
        appid: str,
        previous_encoding_aes_key: str | None = None,
    ) -> None:
        self.token = token
        self.appid = appid
        self._keys = [_aes_key(encoding_aes_key)]
        if previous_encoding_aes_key:
            self._keys.append(_aes_key(previous_encoding_aes_key))

    @classmethod
    def for_app(cls, app: WeChatApp) -> MessageCrypto:
        if not app.encoding_aes_key:
            raise ConfigurationError(f"WeChat app {app.name} ({app.appid}) has no encoding_aes_key")
        try:
            return cls(app.token, app.encoding_aes_key, app.appid, app.previous_encoding_aes_key)
        except BadKey as exc:
            raise ConfigurationError(f"WeChat app {app.name} ({app.appid}): {exc.detail}") from None

    # --- inbound ------------------------------------------------------------------------------

    def check_msg_signature(self, msg_signature: str, timestamp: str, nonce: str, encrypt: str) -> None:
        verify_signature(msg_signature, self.token, timestamp, nonce, encrypt)

    def decrypt(self, encrypt_b64: str) -> Decrypted:
        try:
            ciphertext = base64.b64decode(encrypt_b64.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise BadBase64("Encrypt is not valid base64") from None
        if not ciphertext or len(ciphertext) % 16:
            raise BadLength(f"the ciphertext is {len(ciphertext)} bytes, not a non-zero multiple of 16")
        errors: list[MalformedPush] = []
        # The official FAQ: after an EncodingAESKey change, WeChat may still use the previous key for a
        # while, so try it before rejecting the push (and reply with whichever key worked).
        for index, key in enumerate(self._keys):
            try:
                return Decrypted(self._open(key, ciphertext), index)
            except MalformedPush as exc:
                errors.append(exc)
        raise errors[0]

    def _open(self, key: bytes, ciphertext: bytes) -> bytes:
        decryptor = _cipher(key).decryptor()
        plain = decryptor.update(ciphertext) + decryptor.finalize()
        pad = plain[-1]
        if not 1 <= pad <= _PAD_TO or plain[-pad:] != bytes([pad]) * pad:
            raise BadPadding("the decrypted message has invalid PKCS#7 padding (wrong key or corrupted data)")
        body = plain[:-pad]
        if len(body) < _HEADER_LEN:
            raise BadLength("the decrypted message is shorter than its 20-byte header")
        (length,) = struct.unpack(">I", body[_RANDOM_LEN:_HEADER_LEN])
        if length > len(body) - _HEADER_LEN:
            raise BadLength(f"the length field says {length} bytes but only {len(body) - _HEADER_LEN} follow")
        message, trailing = body[_HEADER_LEN : _HEADER_LEN + length], body[_HEADER_LEN + length :]
        if trailing != self.appid.encode():
            raise AppIdMismatch(f"the message was encrypted for another app, not {self.appid}")
        return message

    # --- outbound -----------------------------------------------------------------------------

    def encrypt(self, plaintext: bytes, *, key_index: int = 0, random_prefix: bytes | None = None) -> str:
        if random_prefix is None:
            random_prefix = os.urandom(_RANDOM_LEN)
        if len(random_prefix) != _RANDOM_LEN:
            raise ValueError("random_prefix must be exactly 16 bytes")
        if not 0 <= key_index < len(self._keys):
            raise ValueError(f"no EncodingAESKey with index {key_index}")
        body = random_prefix + struct.pack(">I", len(plaintext)) + plaintext + self.appid.encode()
        pad = _PAD_TO - len(body) % _PAD_TO
        encryptor = _cipher(self._keys[key_index]).encryptor()
        ciphertext = encryptor.update(body + bytes([pad]) * pad) + encryptor.finalize()
        return base64.b64encode(ciphertext).decode()

    def encrypt_reply_xml(self, reply_xml: str, timestamp: str, nonce: str, *, key_index: int = 0) -> str:
        encrypt = self.encrypt(reply_xml.encode(), key_index=key_index)
        signature = sign(self.token, timestamp, nonce, encrypt)
        # Byte-for-byte the envelope wechatpy and WxJava render: a newline after every element.
        return (
            "<xml>\n"
            f"<Encrypt>{_cdata(encrypt)}</Encrypt>\n"
            f"<MsgSignature>{_cdata(signature)}</MsgSignature>\n"
            f"<TimeStamp>{escape(timestamp)}</TimeStamp>\n"
            f"<Nonce>{_cdata(nonce)}</Nonce>\n"
            "</xml>"
        )

    def encrypt_reply_json(self, reply_json: str, timestamp: str, nonce: str, *, key_index: int = 0) -> str:
        encrypt = self.encrypt(reply_json.encode(), key_index=key_index)
        signature = sign(self.token, timestamp, nonce, encrypt)
        # The mini-program doc's example carries TimeStamp as a JSON number.
        ts: int | str = int(timestamp) if timestamp.isascii() and timestamp.isdigit() else timestamp
        return json.dumps({"Encrypt": encrypt, "MsgSignature": signature, "TimeStamp": ts, "Nonce": nonce})

    def encrypt_push(
        self,
        plaintext: bytes,
        timestamp: str,
        nonce: str,
        *,
        to_user: str,
        json_body: bool = False,
        key_index: int = 0,
    ) -> tuple[bytes, str]:
        """What WeChat POSTs in safe mode: the body and the ``msg_signature`` query parameter."""
        encrypt = self.encrypt(plaintext, key_index=key_index)
        signature = sign(self.token, timestamp, nonce, encrypt)
        if json_body:
            body = json.dumps({"ToUserName": to_user, "Encrypt": encrypt}, ensure_ascii=False)
        else:
            body = f"<xml><ToUserName>{_cdata(to_user)}</ToUserName><Encrypt>{_cdata(encrypt)}</Encrypt></xml>"
        return body.encode(), signature
