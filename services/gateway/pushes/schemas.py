"""What a push request carries once verified, and what storing it answered."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.bus.outbox import OutgoingEvent
from shared.wechat.crypto import InvalidSignature


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
    def from_params(cls, params: Mapping[str, str]) -> PushQuery:
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


@dataclass(frozen=True)
class PushRecord:
    """One push to store: its replay-store claim, its inbound-log row and its event (if published)."""

    appid: str
    nonce: str
    timestamp: str
    body_sha256: str
    push_id: int
    dedup_key: str
    event_type: str
    status: str  # accepted | unparsed
    payload: dict[str, Any]
    raw_body: bytes | None
    error: str | None
    event: OutgoingEvent | None


@dataclass(frozen=True)
class Stored:
    """What storing a push answered.

    ``genuine`` is False when the signature (appid, nonce, timestamp) was already used for another
    body: a forgery, and nothing was written. ``fresh`` is False for a push already stored (a WeChat
    retry): it was not stored or published again.
    """

    genuine: bool
    fresh: bool
