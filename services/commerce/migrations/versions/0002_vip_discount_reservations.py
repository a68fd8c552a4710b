"""vip_discount_reservations

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
        "vip_discount_reservations",
        sa.Column("unique_id", sa.String(length=128), nullable=False),
        sa.Column("order_session_id", sa.String(length=128), nullable=True),
        sa.Column("shop_appid", sa.String(length=32), nullable=True),
        sa.Column("openid", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("price_info", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("unique_id", name=op.f("pk_vip_discount_reservations")),
    )


def downgrade() -> None:
    op.drop_table("vip_discount_reservations")
