"""send lookups: the indexes a receipt and an order's attribution find their send by

Revision ID: 0007
Revises: 0006
"""

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_UPGRADE = [
    # TEMPLATESENDJOBFINISH names a msgid (ix_sends_msgid); a subscribe_msg_sent_event names only the
    # app, the openid and the template: its receipt updates the newest sent send of those.
    "CREATE INDEX ix_sends_receipt ON sends (appid, openid, template_id, sent_at DESC) WHERE status = 'sent'",
    # An order is attributed to one send at most: its attribution first asks whether one has it.
    "CREATE INDEX ix_sends_order_id ON sends (order_id) WHERE order_id IS NOT NULL",
]


def upgrade() -> None:
    for statement in _UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP INDEX ix_sends_order_id")
    op.execute("DROP INDEX ix_sends_receipt")
