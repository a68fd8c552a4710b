"""Rate limits shared by every replica: GCRA buckets in PostgreSQL, all of a request's in one statement."""
