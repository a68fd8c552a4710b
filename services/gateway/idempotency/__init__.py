"""``Idempotency-Key`` on the mini-program API's POSTs: the first answer is replayed."""
