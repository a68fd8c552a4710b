"""Verified phone numbers: one member per number, never a merge."""
