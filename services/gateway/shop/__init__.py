"""WeChat Shop callbacks answered in the push's own HTTP response, by the service that owns the answer."""
