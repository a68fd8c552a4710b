"""member graph: unionid provenance, encrypted session keys, follow attribution, phones, profiles,
behaviour events, tags, segments, merge log, WeChat tag and menu sync

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
    op.add_column("members", sa.Column("merged_at", sa.DateTime(timezone=True), nullable=True))

    op.add_column("app_identities", sa.Column("unionid_via", sa.String(length=32), nullable=True))
    op.add_column("app_identities", sa.Column("unionid_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("app_identities", sa.Column("session_key_enc", sa.LargeBinary(), nullable=True))
    op.add_column("app_identities", sa.Column("session_key_at", sa.DateTime(timezone=True), nullable=True))

    op.add_column("follows", sa.Column("first_subscribed_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("follows", sa.Column("subscribe_count", sa.Integer(), server_default="0", nullable=False))
    op.add_column("follows", sa.Column("first_ticket", sa.String(length=256), nullable=True))
    op.add_column("follows", sa.Column("last_scene_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("follows", sa.Column("state_at", sa.DateTime(timezone=True), nullable=True))
    op.execute(
        "UPDATE follows SET first_subscribed_at = subscribed_at, subscribe_count = CASE WHEN subscribed THEN 1 ELSE 0 END"
    )

    op.create_table(
        "follow_events",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("member_id", sa.UUID(), nullable=False),
        sa.Column("appid", sa.String(length=32), nullable=False),
        sa.Column("openid", sa.String(length=64), nullable=False),
        sa.Column("change", sa.String(length=16), nullable=False),
        sa.Column("scene", sa.String(length=128), nullable=True),
        sa.Column("ticket", sa.String(length=256), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("source_event_id", sa.UUID(), nullable=True),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_follow_events_member_id_members")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_follow_events")),
        sa.UniqueConstraint(
            "appid", "openid", "change", "occurred_at", name=op.f("uq_follow_events_appid_openid_change_occurred_at")
        ),
    )
    op.create_index(op.f("ix_follow_events_member_id"), "follow_events", ["member_id"], unique=False)
    op.create_index(op.f("ix_follow_events_scene"), "follow_events", ["scene"], unique=False)

    op.create_table(
        "phones",
        sa.Column("e164", sa.String(length=16), nullable=False),
        sa.Column("member_id", sa.UUID(), nullable=False),
        sa.Column("country_code", sa.String(length=4), nullable=False),
        sa.Column("national_number", sa.String(length=15), nullable=False),
        sa.Column("appid", sa.String(length=32), nullable=False),
        sa.Column("bound_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_phones_member_id_members")),
        sa.PrimaryKeyConstraint("e164", name=op.f("pk_phones")),
    )
    op.create_index(op.f("ix_phones_member_id"), "phones", ["member_id"], unique=False)

    op.create_table(
        "profiles",
        sa.Column("member_id", sa.UUID(), nullable=False),
        sa.Column("product_views", sa.Integer(), server_default="0", nullable=False),
        sa.Column("add_to_carts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("shares", sa.Integer(), server_default="0", nullable=False),
        sa.Column("article_reads", sa.Integer(), server_default="0", nullable=False),
        sa.Column("orders", sa.Integer(), server_default="0", nullable=False),
        sa.Column("spent_fen", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("gifts_sent", sa.Integer(), server_default="0", nullable=False),
        sa.Column("gifts_received", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_order_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_active_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_profiles_member_id_members")),
        sa.PrimaryKeyConstraint("member_id", name=op.f("pk_profiles")),
    )

    op.create_table(
        "behaviour_events",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("member_id", sa.UUID(), nullable=False),
        sa.Column("origin_member_id", sa.UUID(), nullable=False),
        sa.Column("type", sa.String(length=32), nullable=False),
        sa.Column("object_id", sa.String(length=64), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("appid", sa.String(length=32), nullable=True),
        sa.Column("props", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_behaviour_events_member_id_members")),
        sa.ForeignKeyConstraint(
            ["origin_member_id"], ["members.id"], name=op.f("fk_behaviour_events_origin_member_id_members")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_behaviour_events")),
        sa.UniqueConstraint(
            "origin_member_id",
            "type",
            "object_id",
            "occurred_at",
            name=op.f("uq_behaviour_events_origin_member_id_type_object_id_occurred_at"),
        ),
    )
    op.create_index("ix_behaviour_events_member_time", "behaviour_events", ["member_id", "occurred_at"], unique=False)

    op.create_table(
        "tags",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("wechat_sync", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("priority", sa.Integer(), server_default="100", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tags")),
        sa.UniqueConstraint("name", name=op.f("uq_tags_name")),
    )
    op.create_table(
        "member_tags",
        sa.Column("member_id", sa.UUID(), nullable=False),
        sa.Column("tag_id", sa.Integer(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("added_by", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["member_id"], ["members.id"], name=op.f("fk_member_tags_member_id_members")),
        sa.ForeignKeyConstraint(["tag_id"], ["tags.id"], name=op.f("fk_member_tags_tag_id_tags")),
        sa.PrimaryKeyConstraint("member_id", "tag_id", name=op.f("pk_member_tags")),
    )
    op.create_index(op.f("ix_member_tags_tag_id"), "member_tags", ["tag_id"], unique=False)

    op.create_table(
        "segments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("all_tags", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("any_tags", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("none_tags", postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segments")),
        sa.UniqueConstraint("name", name=op.f("uq_segments_name")),
    )

    op.create_table(
        "merges",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("survivor_id", sa.UUID(), nullable=False),
        sa.Column("merged_id", sa.UUID(), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("detail", sa.Text(), server_default="", nullable=False),
        sa.Column("unionid", sa.String(length=64), nullable=True),
        sa.Column("source_event_id", sa.UUID(), nullable=True),
        sa.Column("moved", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("undone_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("undo_reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(["survivor_id"], ["members.id"], name=op.f("fk_merges_survivor_id_members")),
        sa.ForeignKeyConstraint(["merged_id"], ["members.id"], name=op.f("fk_merges_merged_id_members")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_merges")),
    )
    op.create_index(op.f("ix_merges_survivor_id"), "merges", ["survivor_id"], unique=False)
    op.create_index(
        "uq_merges_merged_id_active", "merges", ["merged_id"], unique=True, postgresql_where=sa.text("undone_at IS NULL")
    )

    op.create_table(
        "merge_blocks",
        sa.Column("member_a", sa.UUID(), nullable=False),
        sa.Column("member_b", sa.UUID(), nullable=False),
        sa.Column("merge_id", sa.UUID(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.ForeignKeyConstraint(["member_a"], ["members.id"], name=op.f("fk_merge_blocks_member_a_members")),
        sa.ForeignKeyConstraint(["member_b"], ["members.id"], name=op.f("fk_merge_blocks_member_b_members")),
        sa.ForeignKeyConstraint(["merge_id"], ["merges.id"], name=op.f("fk_merge_blocks_merge_id_merges")),
        sa.PrimaryKeyConstraint("member_a", "member_b", name=op.f("pk_merge_blocks")),
    )

    op.create_table(
        "wechat_tags",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("appid", sa.String(length=32), nullable=False),
        sa.Column("tag_id", sa.Integer(), nullable=False),
        sa.Column("wechat_tag_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(["tag_id"], ["tags.id"], name=op.f("fk_wechat_tags_tag_id_tags")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wechat_tags")),
        sa.UniqueConstraint("appid", "tag_id", name=op.f("uq_wechat_tags_appid_tag_id")),
        sa.UniqueConstraint("appid", "wechat_tag_id", name=op.f("uq_wechat_tags_appid_wechat_tag_id")),
    )
    op.create_table(
        "wechat_user_tags",
        sa.Column("appid", sa.String(length=32), nullable=False),
        sa.Column("openid", sa.String(length=64), nullable=False),
        sa.Column("wechat_tag_id", sa.Integer(), nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("appid", "openid", "wechat_tag_id", name=op.f("pk_wechat_user_tags")),
    )
    op.create_table(
        "wechat_menus",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("appid", sa.String(length=32), nullable=False),
        sa.Column("tag_name", sa.String(length=32), nullable=True),
        sa.Column("wechat_tag_id", sa.Integer(), nullable=True),
        sa.Column("menuid", sa.String(length=32), nullable=True),
        sa.Column("body", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_wechat_menus")),
    )
    op.create_index(op.f("ix_wechat_menus_appid"), "wechat_menus", ["appid"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_wechat_menus_appid"), table_name="wechat_menus")
    op.drop_table("wechat_menus")
    op.drop_table("wechat_user_tags")
    op.drop_table("wechat_tags")
    op.drop_table("merge_blocks")
    op.drop_index("uq_merges_merged_id_active", table_name="merges", postgresql_where=sa.text("undone_at IS NULL"))
    op.drop_index(op.f("ix_merges_survivor_id"), table_name="merges")
    op.drop_table("merges")
    op.drop_table("segments")
    op.drop_index(op.f("ix_member_tags_tag_id"), table_name="member_tags")
    op.drop_table("member_tags")
    op.drop_table("tags")
    op.drop_index("ix_behaviour_events_member_time", table_name="behaviour_events")
    op.drop_table("behaviour_events")
    op.drop_table("profiles")
    op.drop_index(op.f("ix_phones_member_id"), table_name="phones")
    op.drop_table("phones")
    op.drop_index(op.f("ix_follow_events_scene"), table_name="follow_events")
    op.drop_index(op.f("ix_follow_events_member_id"), table_name="follow_events")
    op.drop_table("follow_events")
    for column in ("state_at", "last_scene_at", "first_ticket", "subscribe_count", "first_subscribed_at"):
        op.drop_column("follows", column)
    for column in ("session_key_at", "session_key_enc", "unionid_at", "unionid_via"):
        op.drop_column("app_identities", column)
    op.drop_column("members", "merged_at")
