"""The points ledger: append-only entries in lots, FIFO redemption, expiry, reversal, merge."""
