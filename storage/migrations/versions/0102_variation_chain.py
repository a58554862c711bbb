"""The variation chain: a variation of a variation records every earlier step (seed, strength).

Without it, varying a variation kept only the newest variation seed, so "use this one as the
new source" at strength 0 gave the original picture, not the chosen one. NULL means no earlier
variations, which is what every existing row is. Numbered after the Discord revisions because
the revisions form one numbered line.

Revision ID: 0102_variation_chain
Revises: 0101_discord_posts
"""

import sqlalchemy as sa
from alembic import op

revision = "0102_variation_chain"
down_revision = "0101_discord_posts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("variation_chain", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("variation_chain")
