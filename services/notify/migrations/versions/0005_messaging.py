"""messaging: member channels, service windows, authorisations, sends, limits, campaigns, abandoned orders

Revision ID: 0005
Revises: 0004
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


_UPGRADE = [
    """
    CREATE TABLE member_apps (
            appid varchar(32) NOT NULL,
            openid varchar(64) NOT NULL,
            member_id varchar(64) NOT NULL,
            app_kind varchar(32) NOT NULL,
            following boolean NOT NULL DEFAULT false,
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_member_apps PRIMARY KEY (appid, openid)
        )
    """,
    """
    CREATE INDEX ix_member_apps_member_id ON member_apps (member_id)
    """,
    """
    CREATE TABLE service_windows (
            appid varchar(32) NOT NULL,
            openid varchar(64) NOT NULL,
            expires_at timestamptz NOT NULL,
            remaining integer NOT NULL,
            CONSTRAINT pk_service_windows PRIMARY KEY (appid, openid)
        )
    """,
    """
    CREATE TABLE authorisations (
            appid varchar(32) NOT NULL,
            openid varchar(64) NOT NULL,
            template_id varchar(64) NOT NULL,
            remaining integer NOT NULL DEFAULT 0,
            long_term boolean NOT NULL DEFAULT false,
            updated_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_authorisations PRIMARY KEY (appid, openid, template_id),
            CONSTRAINT ck_authorisations_remaining CHECK (remaining >= 0)
        )
    """,
    """
    CREATE TABLE authorisation_grants (
            id bigserial NOT NULL,
            appid varchar(32) NOT NULL,
            openid varchar(64) NOT NULL,
            template_id varchar(64) NOT NULL,
            source varchar(16) NOT NULL,
            granted_at timestamptz NOT NULL,
            matched boolean NOT NULL DEFAULT false,
            CONSTRAINT pk_authorisation_grants PRIMARY KEY (id)
        )
    """,
    """
    CREATE INDEX ix_authorisation_grants_key ON authorisation_grants (appid, openid, template_id, granted_at)
    """,
    """
    CREATE TABLE campaigns (
            id uuid NOT NULL,
            name varchar(100) NOT NULL,
            audience jsonb NOT NULL,
            message jsonb NOT NULL,
            kind varchar(16) NOT NULL,
            state varchar(16) NOT NULL,
            cursor text,
            fanout_done boolean NOT NULL DEFAULT false,
            fanout_lease timestamptz,
            created_at timestamptz NOT NULL DEFAULT now(),
            started_at timestamptz,
            finished_at timestamptz,
            CONSTRAINT pk_campaigns PRIMARY KEY (id)
        )
    """,
    """
    CREATE TABLE sends (
            id bigserial NOT NULL,
            idempotency_key varchar(300) NOT NULL,
            member_id varchar(64) NOT NULL,
            rule varchar(64),
            campaign_id uuid,
            kind varchar(16) NOT NULL,
            priority smallint NOT NULL DEFAULT 0,
            channel varchar(32),
            appid varchar(32),
            openid varchar(64),
            template_id varchar(64),
            data jsonb NOT NULL DEFAULT '{}'::jsonb,
            page text,
            status varchar(16) NOT NULL,
            reason varchar(64),
            attempts integer NOT NULL DEFAULT 0,
            dead boolean NOT NULL DEFAULT false,
            authorised boolean NOT NULL DEFAULT false,
            cap_counted boolean NOT NULL DEFAULT false,
            due_at timestamptz NOT NULL DEFAULT now(),
            lease_until timestamptz,
            calling_at timestamptz,
            msgid varchar(32),
            errcode integer,
            created_at timestamptz NOT NULL DEFAULT now(),
            sent_at timestamptz,
            delivered_at timestamptz,
            opened_at timestamptz,
            ordered_at timestamptz,
            order_id varchar(32),
            CONSTRAINT pk_sends PRIMARY KEY (id),
            CONSTRAINT uq_sends_idempotency_key UNIQUE (idempotency_key)
        )
    """,
    """
    CREATE INDEX ix_sends_due ON sends (priority DESC, due_at) WHERE status IN ('pending', 'deferred')
    """,
    """
    CREATE INDEX ix_sends_member ON sends (member_id, id DESC)
    """,
    """
    CREATE INDEX ix_sends_campaign ON sends (campaign_id) WHERE campaign_id IS NOT NULL
    """,
    """
    CREATE INDEX ix_sends_msgid ON sends (appid, msgid) WHERE msgid IS NOT NULL
    """,
    """
    CREATE INDEX ix_sends_opened ON sends (member_id, opened_at) WHERE opened_at IS NOT NULL
    """,
    """
    CREATE INDEX ix_sends_dead ON sends (id) WHERE dead
    """,
    """
    CREATE TABLE marketing_caps (
            member_id varchar(64) NOT NULL,
            week date NOT NULL,
            week_count integer NOT NULL,
            day date NOT NULL,
            day_count integer NOT NULL,
            CONSTRAINT pk_marketing_caps PRIMARY KEY (member_id, week)
        )
    """,
    """
    CREATE TABLE api_budgets (
            appid varchar(32) NOT NULL,
            api varchar(64) NOT NULL,
            day date NOT NULL,
            used integer NOT NULL,
            tat timestamptz NOT NULL,
            paused_until timestamptz,
            CONSTRAINT pk_api_budgets PRIMARY KEY (appid, api)
        )
    """,
    """
    CREATE TABLE abandoned_orders (
            order_id varchar(32) NOT NULL,
            member_id varchar(64) NOT NULL,
            title text NOT NULL,
            paid_fen bigint NOT NULL,
            due_at timestamptz NOT NULL,
            state varchar(16) NOT NULL,
            lease_until timestamptz,
            coupon jsonb,
            created_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_abandoned_orders PRIMARY KEY (order_id)
        )
    """,
    """
    CREATE INDEX ix_abandoned_orders_due ON abandoned_orders (due_at) WHERE state = 'waiting'
    """,
]


def upgrade() -> None:
    for statement in _UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for table in (
        "abandoned_orders",
        "api_budgets",
        "marketing_caps",
        "sends",
        "campaigns",
        "authorisation_grants",
        "authorisations",
        "service_windows",
        "member_apps",
    ):
        op.execute(f"DROP TABLE {table}")
