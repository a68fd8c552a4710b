"""Passive replies of the service account, decided from the gateway's copy of notify's rules."""
