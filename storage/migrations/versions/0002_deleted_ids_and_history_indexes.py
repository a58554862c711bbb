"""Tombstones for deleted image ids; indexes for the history page.

Deleting an image (added in this revision) must not free its id for a new image, or an old
link would show a stranger's picture; and asking for a deleted id should say so. History
lists newest first, optionally per owner: both want an index once there are many rows.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deleted_ids",
        sa.Column("id", sa.String(8), primary_key=True),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("generations") as batch:
        batch.create_index("ix_generations_created_at", ["created_at"])
        batch.create_index("ix_generations_owner", ["owner_source", "owner_user_id", "created_at"])


def downgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.drop_index("ix_generations_owner")
        batch.drop_index("ix_generations_created_at")
    op.drop_table("deleted_ids")
