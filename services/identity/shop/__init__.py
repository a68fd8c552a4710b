"""The WeChat Shop membership callbacks identity answers (through the gateway, synchronously)."""
