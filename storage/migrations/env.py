"""Alembic environment. Runs on the connection storage.db.upgrade hands in (in its
transaction); with the plain `alembic` command it connects to sqlalchemy.url instead."""

from alembic import context
from sqlalchemy import create_engine

from storage.models import Base

config = context.config
target_metadata = Base.metadata


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    # Other parts (bot/community.py) put their tables on the same Base, in modules that
    # autogenerate may not have imported: never propose dropping a table the models don't name.
    return not (type_ == "table" and reflected and compare_to is None)


def run(connection) -> None:
    # render_as_batch: SQLite cannot ALTER most things, so Alembic copies and swaps the table.
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                      compare_type=True, include_object=include_object)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      render_as_batch=True, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif config.attributes.get("connection") is not None:
    run(config.attributes["connection"])
else:
    with create_engine(config.get_main_option("sqlalchemy.url")).begin() as conn:
        run(conn)
