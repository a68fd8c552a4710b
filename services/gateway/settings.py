from pydantic import Field, model_validator

from shared.settings import service_settings_class

_Base = service_settings_class("gateway", 8000)


class GatewaySettings(_Base):  # type: ignore[valid-type,misc]
    """The gateway's own knobs (``GATEWAY_*``), on top of the shared ones."""

    max_body_bytes: int = Field(default=64 * 1024, validation_alias="GATEWAY_MAX_BODY_BYTES", ge=1024)
    # WeChat documents no timestamp tolerance; 300 s is the webhook industry default (domain.md §6.1).
    push_window_seconds: int = Field(default=300, validation_alias="GATEWAY_PUSH_WINDOW_SECONDS", ge=30)
    # WeChat Shop retries for ~3.6 h and does not document whether a retry is re-signed: a window
    # shorter than the retry horizon could reject a genuine retry, so it is 4 h (README, "Pushes").
    shop_push_window_seconds: int = Field(default=4 * 3600, validation_alias="GATEWAY_SHOP_PUSH_WINDOW_SECONDS", ge=300)
    # How long inbound pushes (the de-dup keys) and replay nonces are kept: past every retry horizon.
    push_retention_hours: int = Field(default=72, validation_alias="GATEWAY_PUSH_RETENTION_HOURS", ge=5)
    # The passive-reply budget: WeChat waits 5 s; we never spend more than this on notify.
    reply_budget_seconds: float = Field(default=1.5, validation_alias="GATEWAY_REPLY_BUDGET_SECONDS", gt=0, le=4)
    # How often each replica checks (one indexed read of a version) whether its copy of notify's
    # reply rules is current; a changed set is served within this many seconds everywhere.
    reply_rules_refresh_seconds: float = Field(
        default=2.0, validation_alias="GATEWAY_REPLY_RULES_REFRESH_SECONDS", gt=0, le=300
    )
    # Group commit of pushes: a push waits at most this long for others to share its statement and
    # its commit (0 stores each push with its own). It costs a lone push this much latency and saves
    # the gateway ~15 % and PostgreSQL ~60 % of their CPU per push under load (bench/README.md).
    push_batch_window_ms: float = Field(default=1.5, validation_alias="GATEWAY_PUSH_BATCH_WINDOW_MS", ge=0, le=10)

    # Where the services behind the mini-program API listen (internal HTTP).
    identity_url: str = Field(default="http://127.0.0.1:8001", validation_alias="GATEWAY_IDENTITY_URL")
    commerce_url: str = Field(default="http://127.0.0.1:8002", validation_alias="GATEWAY_COMMERCE_URL")
    notify_url: str = Field(default="http://127.0.0.1:8003", validation_alias="GATEWAY_NOTIFY_URL")
    upstream_timeout_seconds: float = Field(
        default=5.0, validation_alias="GATEWAY_UPSTREAM_TIMEOUT_SECONDS", gt=0, le=30
    )
    # Connections kept per upstream. httpcore walks its whole pool on every request, so the pool is
    # sized to the concurrency a replica really has, not to a large round number.
    upstream_max_connections: int = Field(
        default=32, validation_alias="GATEWAY_UPSTREAM_MAX_CONNECTIONS", ge=1, le=1000
    )

    # Mini-program session tokens: signed with SIYU_SESSION_SECRET; the previous secrets (comma
    # separated) are still accepted for verification so a rotation does not sign everyone out.
    session_ttl_seconds: int = Field(default=2 * 3600, validation_alias="GATEWAY_SESSION_TTL_SECONDS", ge=60, le=86400)
    session_previous_secrets: str = Field(default="", validation_alias="GATEWAY_SESSION_PREVIOUS_SECRETS", repr=False)

    # The mini-program API (/api/v1): body cap and rate limits (requests per minute, GCRA).
    api_max_body_bytes: int = Field(default=32 * 1024, validation_alias="GATEWAY_API_MAX_BODY_BYTES", ge=1024)
    rate_ip_per_minute: int = Field(default=300, validation_alias="GATEWAY_RATE_IP_PER_MINUTE", ge=1)
    rate_login_ip_per_minute: int = Field(default=30, validation_alias="GATEWAY_RATE_LOGIN_IP_PER_MINUTE", ge=1)
    rate_member_per_minute: int = Field(default=120, validation_alias="GATEWAY_RATE_MEMBER_PER_MINUTE", ge=1)
    rate_events_per_minute: int = Field(default=30, validation_alias="GATEWAY_RATE_EVENTS_PER_MINUTE", ge=1)
    # The member's writes that cost the owner a transaction (redemptions, check-ins, subscription
    # reports, opens): a budget of their own, under the member's general one.
    rate_writes_per_minute: int = Field(default=30, validation_alias="GATEWAY_RATE_WRITES_PER_MINUTE", ge=1)
    # GET /api/v1/me asks identity and commerce at once; commerce's part (tier, points) is waited
    # for this long at most, then answered as null: the member's page never hangs on the points.
    me_points_budget_seconds: float = Field(
        default=1.0, validation_alias="GATEWAY_ME_POINTS_BUDGET_SECONDS", gt=0, le=30
    )

    # Idempotency-Key: how long a first response is replayed, and how long an in-flight claim
    # holds before another replica may take it over (the first one crashed).
    idempotency_ttl_seconds: int = Field(default=24 * 3600, validation_alias="GATEWAY_IDEMPOTENCY_TTL_SECONDS", ge=60)
    idempotency_lock_seconds: int = Field(default=60, validation_alias="GATEWAY_IDEMPOTENCY_LOCK_SECONDS", ge=5)

    @model_validator(mode="after")
    def _previous_secrets_are_keys(self) -> "GatewaySettings":
        for secret in self.previous_session_secrets:
            if len(secret) < 32:
                raise ValueError("GATEWAY_SESSION_PREVIOUS_SECRETS: every secret needs at least 32 characters")
            if self.env == "prod" and "not-secret" in secret:
                raise ValueError("GATEWAY_SESSION_PREVIOUS_SECRETS still holds the sample development value")
        return self

    @property
    def previous_session_secrets(self) -> list[str]:
        return [s.strip() for s in self.session_previous_secrets.split(",") if s.strip()]
