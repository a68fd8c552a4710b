"""deliveries: every message sent, with WeChat's result

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("appid", sa.String(length=32), nullable=False),
        sa.Column("openid", sa.String(length=64), nullable=False),
        sa.Column("source_event_id", sa.String(length=64), nullable=True),
        sa.Column("body", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("errcode", sa.Integer(), nullable=True),
        sa.Column("errmsg", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sa.UniqueConstraint("source_event_id", name=op.f("uq_deliveries_source_event_id")),
    )
    op.create_index(op.f("ix_deliveries_openid"), "deliveries", ["openid"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_deliveries_openid"), table_name="deliveries")
    op.drop_table("deliveries")
