"""Generations and their images.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = sa.DateTime(timezone=True)
    op.create_table(
        "generations",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text()),
        sa.Column("error_type", sa.String(64)),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("started_at", ts),
        sa.Column("finished_at", ts),
        sa.Column("seconds", sa.Float()),
        sa.Column("runner", sa.String(200)),
        sa.Column("owner_source", sa.String(16), nullable=False),
        sa.Column("owner_user_id", sa.String(128), nullable=False),
        sa.Column("owner_display_name", sa.String(256), nullable=False),
        sa.Column("owner_guild_id", sa.String(64)),
        sa.Column("owner_channel_id", sa.String(64)),
        sa.Column("parent_id", sa.String(8)),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("negative_prompt", sa.Text(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("guidance", sa.Float(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("sampler", sa.String(32), nullable=False),
        sa.Column("variation_seed", sa.BigInteger()),
        sa.Column("variation_strength", sa.Float(), nullable=False),
        sa.Column("init_image_sha256", sa.String(64)),
        sa.Column("strength", sa.Float(), nullable=False),
        sa.Column("mask_sha256", sa.String(64)),
        sa.Column("model_id", sa.String(1024), nullable=False),
        sa.Column("model_sha256", sa.String(64), nullable=False),
        sa.Column("software_version", sa.String(32), nullable=False),
        sa.Column("noise_source", sa.String(200), nullable=False),
        sa.Column("fingerprint", sa.JSON(), nullable=False),
    )
    op.create_index("ix_generations_status", "generations", ["status"])
    op.create_index("ix_generations_parent_id", "generations", ["parent_id"])
    op.create_table(
        "images",
        sa.Column("id", sa.String(8), primary_key=True),
        sa.Column("generation_id", sa.String(16), sa.ForeignKey("generations.id", ondelete="CASCADE"), nullable=False),
        sa.Column("image_index", sa.Integer(), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("variation_seed", sa.BigInteger()),
        sa.Column("file", sa.String(256), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("bytes", sa.Integer(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("timeline_sha256", sa.String(64)),
        sa.Column("created_at", ts, nullable=False),
    )
    op.create_index("ix_images_generation_id", "images", ["generation_id"])
    op.create_index("ix_images_sha256", "images", ["sha256"])
    op.create_index("ix_images_timeline_sha256", "images", ["timeline_sha256"])


def downgrade() -> None:
    op.drop_table("images")
    op.drop_table("generations")
