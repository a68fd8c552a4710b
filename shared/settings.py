"""Settings on pydantic-settings, with the variables of contracts.md.

A service builds its settings once at start through :func:`load_settings`; a missing or invalid
required setting stops the process with one line that names the variable.
"""

from __future__ import annotations

import sys
from functools import cached_property
from typing import Any, Literal, TypeVar

from pydantic import Field, ValidationError, create_model, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigurationError
from shared.wechat.apps import WeChatApps, load_apps

# Sample development credentials: only accepted when SIYU_ENV is dev or test.
DEV_INTERNAL_TOKEN = "dev-internal-token-not-secret"
DEV_SESSION_SECRET = "dev-session-secret-not-secret-0123456789"
DEV_ADMIN_TOKEN = "dev-admin-token-not-secret"


class SiyuSettings(BaseSettings):
    """What every service reads from ``SIYU_*``."""

    model_config = SettingsConfigDict(env_prefix="SIYU_", extra="ignore", frozen=True)

    env: Literal["dev", "test", "prod"] = "dev"
    postgres_dsn: str = "postgresql://postgres@127.0.0.1:5432"
    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    # Prefix for exchange and queue names; empty in production. Tests use it to isolate a run.
    amqp_namespace: str = Field(default="", pattern=r"^[a-z0-9_.-]*$")
    wechat_apps_file: str | None = None
    wechat_api_base: str = "https://api.weixin.qq.com"
    gateway_url: str = "http://127.0.0.1:8000"
    internal_token: str | None = Field(default=None, min_length=16)
    session_secret: str | None = Field(default=None, min_length=32)
    # Bearer token of the operator API (/admin/v1); make run generates and prints a dev one.
    admin_token: str | None = Field(default=None, min_length=16)
    log_level: str = "INFO"
    # Run each service's outbox relay inside the service (tests, a one-process deployment) instead
    # of in the relay process (`python -m services.relay`, which make run and compose start).
    relay_in_process: bool = False

    @model_validator(mode="after")
    def _secrets_outside_dev(self) -> SiyuSettings:
        if self.env == "prod":
            for name in ("internal_token", "session_secret", "admin_token"):
                value = getattr(self, name)
                if not value:
                    raise ValueError(f"SIYU_{name.upper()} is required outside dev/test")
                if "not-secret" in value:
                    raise ValueError(f"SIYU_{name.upper()} still holds the sample development value")
        return self

    @property
    def internal_token_value(self) -> str:
        return self.internal_token or DEV_INTERNAL_TOKEN

    @property
    def session_secret_value(self) -> str:
        return self.session_secret or DEV_SESSION_SECRET

    @property
    def admin_token_value(self) -> str:
        return self.admin_token or DEV_ADMIN_TOKEN

    @cached_property
    def wechat_apps(self) -> WeChatApps:
        if not self.wechat_apps_file:
            raise ConfigurationError("SIYU_WECHAT_APPS_FILE is required: the path of the brand's WeChat apps file")
        return load_apps(self.wechat_apps_file)


class ServiceSettings(SiyuSettings):
    """A service's settings: the shared ones plus its own address and database.

    Subclasses set ``service_name`` and an env prefix such as ``IDENTITY_`` for per-service
    overrides (``IDENTITY_DATABASE_URL``, ``IDENTITY_PORT``); the shared ``SIYU_*`` variables are
    read through aliases so both prefixes work together.
    """

    service_name: str = "service"
    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str | None = None
    db_pool_size: int = 10
    relay_batch_size: int = 200
    # At most the pool's connections (pool_size + max_overflow = 2 x db_pool_size): a message
    # beyond that would only wait for a connection.
    consumer_prefetch: int = 16

    @property
    def database_name(self) -> str:
        return f"siyu_{self.service_name}"

    @property
    def database_dsn(self) -> str:
        """The service database as a plain ``postgresql://`` DSN (asyncpg, at run time)."""
        url = self.database_url or f"{self.postgres_dsn.rstrip('/')}/{self.database_name}"
        return url.replace("postgresql+asyncpg://", "postgresql://", 1)

    @property
    def sqlalchemy_url(self) -> str:
        """The same database for SQLAlchemy (Alembic migrations)."""
        url = self.database_dsn
        for prefix in ("postgresql://", "postgres://"):
            if url.startswith(prefix):
                return "postgresql+asyncpg://" + url[len(prefix) :]
        return url


S = TypeVar("S", bound=SiyuSettings)


def service_settings_class(service: str, port: int) -> type[ServiceSettings]:
    """Build ``<Service>Settings``: the ``SIYU_*`` variables plus ``<SERVICE>_HOST``,
    ``<SERVICE>_PORT`` and ``<SERVICE>_DATABASE_URL`` overrides."""
    prefix = service.upper()
    return create_model(
        f"{service.capitalize()}Settings",
        __base__=ServiceSettings,
        service_name=(str, service),
        host=(str, Field(default="127.0.0.1", validation_alias=f"{prefix}_HOST")),
        port=(int, Field(default=port, validation_alias=f"{prefix}_PORT")),
        database_url=(str | None, Field(default=None, validation_alias=f"{prefix}_DATABASE_URL")),
    )


def load_settings(cls: type[S], **overrides: Any) -> S:
    """Build settings or stop the process with one line naming the bad variable."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = "_".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if not loc:
            print(f"siyu: invalid configuration: {msg}", file=sys.stderr)
        else:
            name = loc if loc.isupper() else f"SIYU_{loc.upper()}"
            secret = any(w in name.lower() for w in ("token", "secret", "dsn", "url", "key", "password"))
            shown = "" if secret else f" (got {err.get('input')!r})"
            print(f"siyu: invalid setting {name}: {msg}{shown}", file=sys.stderr)
        raise SystemExit(2) from None
    except ConfigurationError as exc:
        print(f"siyu: {exc.detail}", file=sys.stderr)
        raise SystemExit(2) from None
