"""WeChat pushes: verify, decode, de-duplicate, store with the outbox row in one statement, answer."""
