"""data path: push ids in blocks, multi-bucket rate limits with an indexed sweep, reply rules copy

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# services/gateway/pushes/repository.py PUSH_ID_BLOCK: each nextval reserves this many ids.
PUSH_ID_BLOCK = 1000


def upgrade() -> None:
    op.execute(f"ALTER SEQUENCE inbound_pushes_id_seq INCREMENT BY {PUSH_ID_BLOCK}")
    op.add_column("rate_limits", sa.Column("period_s", sa.Float(), server_default=sa.text("60"), nullable=False))
    op.add_column(
        "rate_limits",
        sa.Column(
            "sweep_at", sa.DateTime(timezone=True), server_default=sa.text("now() + interval '1 hour'"), nullable=False
        ),
    )
    op.create_index("ix_rate_limits_sweep_at", "rate_limits", ["sweep_at"], unique=False)
    op.create_table(
        "reply_rules",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("rules", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stored_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_reply_rules")),
    )


def downgrade() -> None:
    op.drop_table("reply_rules")
    op.drop_index("ix_rate_limits_sweep_at", table_name="rate_limits")
    op.drop_column("rate_limits", "sweep_at")
    op.drop_column("rate_limits", "period_s")
    op.execute("ALTER SEQUENCE inbound_pushes_id_seq INCREMENT BY 1")
