"""follow changes in WeChat's order, WeChat sync leases and attempts, retention indexes, stored phone masks

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# The one masking rule (services/identity/phones/service.py PhoneNumber.masked), for the rows bound
# before the mask was stored.
_MASK = """
CASE WHEN length(national_number) >= 8
     THEN left(national_number, 3) || repeat('*', length(national_number) - 7) || right(national_number, 4)
     ELSE left(national_number, 1) || repeat('*', greatest(length(national_number) - 3, 1)) || right(national_number, 2)
END
"""


def upgrade() -> None:
    # An unsubscribe handled before the subscribe it follows (deliveries run concurrently) is
    # recorded before anyone is known: the log row waits without a member until the subscribe.
    op.alter_column("follow_events", "member_id", existing_type=sa.UUID(), nullable=True)
    # First touch compared by WeChat time, so a late older push still becomes the first touch.
    op.add_column("follows", sa.Column("first_scene_at", sa.DateTime(timezone=True), nullable=True))
    op.execute("UPDATE follows SET first_scene_at = first_subscribed_at WHERE first_scene IS NOT NULL")
    # Tag sync streams the subscribed followers of an account in openid order.
    op.create_index(
        "ix_follows_subscribed_openid",
        "follows",
        ["appid", "openid"],
        unique=False,
        postgresql_where=sa.text("subscribed"),
    )

    op.add_column("phones", sa.Column("masked", sa.String(length=20), nullable=True))
    op.execute(f"UPDATE phones SET masked = {_MASK}")
    op.alter_column("phones", "masked", existing_type=sa.String(length=20), nullable=False)

    # Retention (services/identity/retention.py): deletes by age go through these.
    op.create_index("ix_follow_events_occurred_at", "follow_events", ["occurred_at"], unique=False)
    op.create_index("ix_behaviour_events_occurred_at", "behaviour_events", ["occurred_at"], unique=False)

    op.create_table(
        "wechat_sync_jobs",
        sa.Column("appid", sa.String(length=32), nullable=False),
        sa.Column("job", sa.String(length=16), nullable=False),
        sa.Column("lease_owner", sa.UUID(), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cursor", sa.String(length=64), nullable=True),
        sa.Column("run_id", sa.UUID(), nullable=True),
        sa.Column("report", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("appid", "job", name=op.f("pk_wechat_sync_jobs")),
    )
    op.create_table(
        "wechat_sync_attempts",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("appid", sa.String(length=32), nullable=False),
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("op", sa.String(length=8), nullable=False),
        sa.Column("wechat_tag_id", sa.Integer(), nullable=False),
        sa.Column("openids", postgresql.ARRAY(sa.String(length=64)), nullable=False),
        sa.Column("state", sa.String(length=8), server_default="pending", nullable=False),
        sa.Column("outcome", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wechat_sync_attempts")),
    )
    op.create_index(
        "ix_wechat_sync_attempts_pending",
        "wechat_sync_attempts",
        ["appid", "id"],
        unique=False,
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_index(
        "ix_wechat_sync_attempts_done_at",
        "wechat_sync_attempts",
        ["done_at"],
        unique=False,
        postgresql_where=sa.text("state = 'done'"),
    )


def downgrade() -> None:
    op.drop_index("ix_wechat_sync_attempts_done_at", table_name="wechat_sync_attempts")
    op.drop_index("ix_wechat_sync_attempts_pending", table_name="wechat_sync_attempts")
    op.drop_table("wechat_sync_attempts")
    op.drop_table("wechat_sync_jobs")
    op.drop_index("ix_behaviour_events_occurred_at", table_name="behaviour_events")
    op.drop_index("ix_follow_events_occurred_at", table_name="follow_events")
    op.drop_column("phones", "masked")
    op.drop_index("ix_follows_subscribed_openid", table_name="follows")
    op.drop_column("follows", "first_scene_at")
    op.execute("DELETE FROM follow_events WHERE member_id IS NULL")
    op.alter_column("follow_events", "member_id", existing_type=sa.UUID(), nullable=False)
