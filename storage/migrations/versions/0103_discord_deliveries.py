"""Jobs the bot still owes a message (bot/pending.py): a result finished while the bot was
restarting is delivered when it starts again.

Revision ID: 0103_discord_deliveries
Revises: 0102_variation_chain
"""

import sqlalchemy as sa
from alembic import op

revision = "0103_discord_deliveries"
down_revision = "0102_variation_chain"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "discord_deliveries",
        sa.Column("generation_id", sa.String(16), primary_key=True),
        sa.Column("user_id", sa.String(32), nullable=False),
        sa.Column("channel_id", sa.String(32), nullable=False),
        sa.Column("dm", sa.Boolean(), nullable=False),
        sa.Column("token", sa.String(512), nullable=True),
        sa.Column("token_created", sa.Float(), nullable=True),
        sa.Column("message_id", sa.String(32), nullable=True),
        sa.Column("header", sa.Text(), nullable=False),
        sa.Column("filesize_limit", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("discord_deliveries")
