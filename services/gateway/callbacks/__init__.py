"""WeChat pushes: verify, decode, de-duplicate, store with the outbox row, acknowledge."""
