"""A Discord member's own defaults for /imagine (bot/cogs/settings.py, `/settings`): steps,
sampler, aspect and count, next to the /private preference they already had. NULL means
'not set: the server's default'; every existing row is that.

Revision ID: 0130_discord_member_defaults
Revises: 0103_discord_deliveries
"""

import sqlalchemy as sa
from alembic import op

revision = "0130_discord_member_defaults"
down_revision = "0103_discord_deliveries"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("discord_user_prefs") as batch:
        batch.add_column(sa.Column("steps", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("sampler", sa.String(32), nullable=True))
        batch.add_column(sa.Column("aspect", sa.String(8), nullable=True))
        batch.add_column(sa.Column("count", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("discord_user_prefs") as batch:
        for name in ("count", "aspect", "sampler", "steps"):
            batch.drop_column(name)
