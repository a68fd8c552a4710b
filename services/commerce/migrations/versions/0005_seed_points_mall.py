"""seed the points mall with a coupon reward in stock (make run shows a mall that works)

Revision ID: 0005
Revises: 0004

Idempotent: an operator who changed or sold out the seeded reward keeps their change.
"""

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

SEED_REWARD_ID = "rw-coupon-10"


def upgrade() -> None:
    op.execute(
        "INSERT INTO rewards (reward_id, title, kind, cost_points, remaining, coupon) VALUES ("
        f"'{SEED_REWARD_ID}', '¥10 无门槛优惠券', 'coupon', 100, 1000, "
        """'{"discount_fen": 1000, "min_spend_fen": 0, "validity_days": 30}'::jsonb)"""
        " ON CONFLICT (reward_id) DO NOTHING"
    )


def downgrade() -> None:
    op.execute(f"DELETE FROM rewards WHERE reward_id = '{SEED_REWARD_ID}'")
