"""retention: the indexes commerce's prunes walk (VIP-discount reservations, check-ins)

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # services/commerce/retention.py and the README's "Retention" table.
    op.create_index("ix_vip_discount_reservations_created_at", "vip_discount_reservations", ["created_at"])
    op.create_index("ix_checkins_day", "checkins", ["day"])


def downgrade() -> None:
    op.drop_index("ix_checkins_day", table_name="checkins")
    op.drop_index("ix_vip_discount_reservations_created_at", table_name="vip_discount_reservations")
