"""Daily check-in: one per member per Beijing day, with a streak bonus."""
