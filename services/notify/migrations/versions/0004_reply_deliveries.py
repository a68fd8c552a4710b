"""replies: deliveries decided, sent and recorded apart; the reply rules last published

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


def upgrade() -> None:
    op.add_column("deliveries", sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False))
    op.add_column(
        "deliveries",
        sa.Column("available_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
    )
    op.add_column("deliveries", sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("deliveries", sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_deliveries_pending", "deliveries", ["available_at"], postgresql_where=sa.text("status = 'pending'")
    )
    op.create_index(
        "ix_deliveries_sending", "deliveries", ["claimed_at"], postgresql_where=sa.text("status = 'sending'")
    )
    op.create_table(
        "published_reply_rules",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("rules", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_published_reply_rules")),
    )


def downgrade() -> None:
    op.drop_table("published_reply_rules")
    op.drop_index("ix_deliveries_sending", table_name="deliveries")
    op.drop_index("ix_deliveries_pending", table_name="deliveries")
    op.drop_column("deliveries", "finished_at")
    op.drop_column("deliveries", "claimed_at")
    op.drop_column("deliveries", "available_at")
    op.drop_column("deliveries", "attempts")
