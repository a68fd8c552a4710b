"""The mini-program API, ``/api/v1``: sessions, the member's own page, and member-scoped routes
forwarded to the service that owns them."""
