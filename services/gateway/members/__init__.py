"""The signed-in member's routes, forwarded to the service that owns each (no BOLA by construction)."""
