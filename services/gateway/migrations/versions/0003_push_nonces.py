"""push_nonces: the replay store

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "push_nonces",
        sa.Column("appid", sa.String(length=32), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("timestamp", sa.String(length=16), nullable=False),
        sa.Column("body_sha256", sa.String(length=64), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("appid", "nonce", "timestamp", name=op.f("pk_push_nonces")),
    )
    op.create_index("ix_push_nonces_seen_at", "push_nonces", ["seen_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_push_nonces_seen_at", table_name="push_nonces")
    op.drop_table("push_nonces")
