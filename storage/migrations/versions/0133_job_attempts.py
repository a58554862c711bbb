"""How many times a worker has started a job (Celery workers, core/distributed): a job whose
worker died is run again by another, and after STATUARY's attempt limit it is failed with the
reason instead of being retried for ever. The in-process service leaves it at 0 or 1.

Revision ID: 0133_job_attempts
Revises: 0132_prompt_syntax_and_loras
"""

import sqlalchemy as sa
from alembic import op

revision = "0133_job_attempts"
down_revision = "0132_prompt_syntax_and_loras"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("attempts")
