"""Discord community controls and user preferences (bot/community.py).

Per-server rules (allowed channels, blocked words, per-member limits, default and maximum
steps/size/count) and per-user preferences (/private). Numbered 0100 so storage's own
revisions keep the low numbers; it chains after storage's latest revision when it was written.

Revision ID: 0100_discord
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0100_discord"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "discord_guild_settings",
        sa.Column("guild_id", sa.String(32), primary_key=True),
        sa.Column("allowed_channels", sa.JSON(), nullable=False),
        sa.Column("blocked_words", sa.JSON(), nullable=False),
        sa.Column("max_queued", sa.Integer()),
        sa.Column("max_per_hour", sa.Integer()),
        sa.Column("default_steps", sa.Integer()),
        sa.Column("max_steps", sa.Integer()),
        sa.Column("default_size", sa.Integer()),
        sa.Column("max_size", sa.Integer()),
        sa.Column("default_count", sa.Integer()),
        sa.Column("max_count", sa.Integer()),
        sa.Column("updated_at", ts, nullable=False),
        sa.Column("updated_by", sa.String(32), nullable=False),
    )
    op.create_table(
        "discord_user_prefs",
        sa.Column("user_id", sa.String(32), primary_key=True),
        sa.Column("private", sa.Boolean(), nullable=False),
        sa.Column("updated_at", ts, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("discord_user_prefs")
    op.drop_table("discord_guild_settings")
