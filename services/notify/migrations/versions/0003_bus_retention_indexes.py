"""bus: indexes for outbox and inbox retention

Revision ID: 0003
Revises: 0002
"""

from alembic import op

from shared.bus.tables import create_retention_indexes, drop_retention_indexes

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_retention_indexes(op)


def downgrade() -> None:
    drop_retention_indexes(op)
