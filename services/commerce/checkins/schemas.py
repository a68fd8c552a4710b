"""Answers of the check-in route (contracts.md)."""

from __future__ import annotations

from pydantic import BaseModel


class CheckInAnswer(BaseModel):
    points: int
    streak: int
