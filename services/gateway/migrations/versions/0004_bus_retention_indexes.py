"""bus: indexes for outbox and inbox retention

Revision ID: 0004
Revises: 0003
"""

from alembic import op

from shared.bus.tables import create_retention_indexes, drop_retention_indexes

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_retention_indexes(op)


def downgrade() -> None:
    drop_retention_indexes(op)
