"""Sign-in bodies, identity's login answer, and the problem shape every API route documents.

Every request body forbids unknown fields (422): nothing the client sends can set a member id, a
tier, points or any other field the server owns.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# The same bounds identity applies, checked here first so a bad request never leaves the edge.
WX_CODE = r"^[A-Za-z0-9_-]{1,256}$"


class ApiRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SessionRequest(ApiRequest):
    code: str = Field(pattern=WX_CODE, description="The code from `wx.login()`: single use, valid for 5 minutes.")


class SessionOut(BaseModel):
    token: str = Field(description="Send as `Authorization: Bearer <token>` on every other call.")
    expires_at: datetime = Field(description="When the token stops working; sign in again with a new code.")
    member_id: uuid.UUID


class LoginResult(BaseModel):
    """identity's answer to ``POST /internal/logins``, as far as the gateway reads it."""

    model_config = ConfigDict(extra="ignore")

    member_id: uuid.UUID
    openid: str
    unionid_known: bool
    created: bool


class Problem(BaseModel):
    """RFC 9457 problem details (``application/problem+json``)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    request_id: str | None = None


_PROBLEM_SCHEMA = Problem.model_json_schema()


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI: these statuses answer with an RFC 9457 problem."""
    return {
        s: {"description": "A problem (RFC 9457)", "content": {"application/problem+json": {"schema": _PROBLEM_SCHEMA}}}
        for s in statuses
    }
