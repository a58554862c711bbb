"""Prompt syntax and LoRAs in the recipe.

`prompt_syntax` says how the prompt was read: "a1111" (weights, BREAK, long prompts in chunks)
or NULL for "plain", the words as written and cut at the text encoder's window, which is how
every existing row was made. `loras` lists [name, weight, file sha256] per LoRA; NULL means
none, which is what every existing row is.

Revision ID: 0132_prompt_syntax_and_loras
Revises: 0131_hires_fix
"""

import sqlalchemy as sa
from alembic import op

revision = "0132_prompt_syntax_and_loras"
down_revision = "0131_hires_fix"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.add_column(sa.Column("prompt_syntax", sa.String(16), nullable=True))
        batch.add_column(sa.Column("loras", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("generations") as batch:
        batch.drop_column("loras")
        batch.drop_column("prompt_syntax")
