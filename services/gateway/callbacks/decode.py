"""Turn a raw push request into a decoded payload, or reject it with the contract's status.

Order matters: the app is looked up first (404), the size is capped before anything is parsed
(413), the URL signature is checked before the body is touched (401), and only then is the body
parsed and, in safe or compatible mode, ``msg_signature`` checked over ``Encrypt`` and decrypted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.wechat.apps import AppKind, WeChatApp
from shared.wechat.codec import is_json_document, parse_json, parse_xml
from shared.wechat.crypto import InvalidSignature, MalformedPush, MessageCrypto, verify_signature


@dataclass(frozen=True)
class PushQuery:
    signature: str
    timestamp: str
    nonce: str
    encrypt_type: str | None = None
    msg_signature: str | None = None

    @property
    def encrypted(self) -> bool:
        return (self.encrypt_type or "raw").lower() == "aes"

    @classmethod
    def from_params(cls, params: dict[str, str]) -> PushQuery:
        missing = [k for k in ("signature", "timestamp", "nonce") if not params.get(k)]
        if missing:
            raise InvalidSignature(f"unsigned push: missing {', '.join(missing)}")
        return cls(
            signature=params["signature"],
            timestamp=params["timestamp"],
            nonce=params["nonce"],
            encrypt_type=params.get("encrypt_type"),
            msg_signature=params.get("msg_signature"),
        )


@dataclass(frozen=True)
class DecodedPush:
    payload: dict[str, Any]
    encrypted: bool
    json_body: bool
    key_index: int  # which EncodingAESKey decrypted it: the reply is encrypted with the same one


def is_json(app: WeChatApp, content_type: str, body: bytes) -> bool:
    if app.kind is AppKind.SHOP or app.push_format == "json":
        return True
    if "json" in content_type:
        return True
    return is_json_document(body)


def decode_push(app: WeChatApp, query: PushQuery, body: bytes, content_type: str, max_bytes: int) -> DecodedPush:
    verify_signature(query.signature, app.token, query.timestamp, query.nonce)
    json_body = is_json(app, content_type, body)
    outer = parse_json(body, max_bytes=max_bytes) if json_body else parse_xml(body, max_bytes=max_bytes)
    if not query.encrypted:
        if app.kind is AppKind.SHOP:
            raise MalformedPush("WeChat Shop pushes only in safe mode: encrypt_type=aes is required")
        return DecodedPush(outer, encrypted=False, json_body=json_body, key_index=0)
    encrypt = outer.get("Encrypt")
    if not isinstance(encrypt, str) or not encrypt:
        raise MalformedPush("encrypt_type=aes but the body has no Encrypt field")
    if not query.msg_signature:
        raise InvalidSignature("encrypted push without msg_signature")
    crypto = MessageCrypto.for_app(app)
    crypto.check_msg_signature(query.msg_signature, query.timestamp, query.nonce, encrypt)
    decrypted = crypto.decrypt(encrypt)
    inner_json = json_body and is_json_document(decrypted.plaintext)
    payload = (
        parse_json(decrypted.plaintext, max_bytes=max_bytes)
        if inner_json
        else parse_xml(decrypted.plaintext, max_bytes=max_bytes)
    )
    return DecodedPush(payload, encrypted=True, json_body=json_body, key_index=decrypted.key_index)
