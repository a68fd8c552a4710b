"""Passive replies: what the service account answers to a message, a follow or a menu click."""
