"""The hires fix in the recipe (core/hires.py): scale, steps, strength and upscaler of the second,
larger pass, as one JSON value. NULL means no hires fix, which is what every existing row is.

Revision ID: 0131_hires_fix
Revises: 0130_discord_member_defaults
"""

import sqlalchemy as sa
from alembic import op

revision = "0131_hires_fix"
down_revision = "0130_discord_member_defaults"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("hires", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("hires")
