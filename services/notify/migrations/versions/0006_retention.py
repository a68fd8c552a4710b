"""retention: the indexes notify's prunes walk, and a campaign's recap kept when its sends go

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# services/notify/retention.py and the README's "Retention" table: each delete finds its rows by one
# of these. A partial index repeats its prune's status condition, so rows still in play (a pending
# send, a waiting reminder, an unspent authorisation) are not even in it.
_UPGRADE = [
    # The recap (targeted, sent, delivered, ...) stored before the first of a campaign's sends is pruned.
    "ALTER TABLE campaigns ADD COLUMN recap jsonb",
    "CREATE INDEX ix_sends_done_created_at ON sends (created_at) "
    "WHERE status IN ('sent', 'delivered', 'failed', 'skipped')",
    "CREATE INDEX ix_deliveries_done_created_at ON deliveries (created_at) "
    "WHERE status IN ('sent', 'rejected', 'failed', 'unknown')",
    "CREATE INDEX ix_service_windows_expires_at ON service_windows (expires_at)",
    "CREATE INDEX ix_authorisation_grants_granted_at ON authorisation_grants (granted_at)",
    "CREATE INDEX ix_authorisations_spent ON authorisations (updated_at) WHERE remaining = 0 AND NOT long_term",
    "CREATE INDEX ix_marketing_caps_week ON marketing_caps (week)",
    "CREATE INDEX ix_abandoned_orders_closed ON abandoned_orders (created_at) WHERE state <> 'waiting'",
]


def upgrade() -> None:
    for statement in _UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    for index in (
        "ix_abandoned_orders_closed",
        "ix_marketing_caps_week",
        "ix_authorisations_spent",
        "ix_authorisation_grants_granted_at",
        "ix_service_windows_expires_at",
        "ix_deliveries_done_created_at",
        "ix_sends_done_created_at",
    ):
        op.execute(f"DROP INDEX {index}")
    op.execute("ALTER TABLE campaigns DROP COLUMN recap")
