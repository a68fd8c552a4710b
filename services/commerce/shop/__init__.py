"""WeChat Shop: callbacks commerce answers synchronously (membership benefits at checkout)."""
