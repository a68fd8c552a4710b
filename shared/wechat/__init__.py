"""The WeChat core: signatures and AES, a hardened codec, typed push models, the API client."""
