"""Which Discord messages show which images (bot/posts.py), so deleting an image removes or
edits the bot's posts of it.

Revision ID: 0101_discord_posts
Revises: 0100_discord
"""

import sqlalchemy as sa
from alembic import op

revision = "0101_discord_posts"
down_revision = "0100_discord"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "discord_posts",
        sa.Column("message_id", sa.String(32), primary_key=True),
        sa.Column("image_id", sa.String(8), primary_key=True),
        sa.Column("channel_id", sa.String(32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_discord_posts_image_id", "discord_posts", ["image_id"])


def downgrade() -> None:
    op.drop_index("ix_discord_posts_image_id", table_name="discord_posts")
    op.drop_table("discord_posts")
