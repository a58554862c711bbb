"""Engines and migrations.

SQLite (the default) runs in WAL mode with a busy timeout, and every write transaction
starts with BEGIN IMMEDIATE: the writer takes the lock up front, so two writers queue on the
busy timeout instead of one failing with "database is locked" when it upgrades a read lock
(the pysqlite recipe from the SQLAlchemy SQLite dialect docs). Reads use a plain deferred
BEGIN, and in WAL mode never wait for a writer.

PostgreSQL needs none of this; it is reached through DATABASE_URL=postgresql+psycopg://...
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
BUSY_TIMEOUT_S = 60.0

log = logging.getLogger(__name__)


class StoreUnavailable(RuntimeError):
    """The record cannot be opened (the data folder, the SQLite file, the PostgreSQL server);
    the message says what is wrong and what to change, in one sentence."""


DATABASE_DOWN = "The database cannot be reached just now; try again in a minute."


# The error codes that mean the database itself is away or stuck, not that a statement is wrong
# (SQLite raises OperationalError for "LIKE or GLOB pattern too complex" too). PostgreSQL's SQLSTATE
# is the same whatever language the server writes its messages in: class 08 (connection exception),
# too many connections, the server shutting down or starting up, a statement cancelled or timed
# out, an I/O error. SQLite's primary result codes: busy, locked, read-only, I/O error, cannot open.
_AWAY_SQLSTATE = ("08", "53300", "57014", "57P01", "57P02", "57P03", "58030")
_AWAY_SQLITE = (5, 6, 8, 10, 14)
# Without a code (a connection the client library found dropped), what drivers say in English.
_AWAY = ("connect", "closed", "terminat", "shutting down", "starting up", "recovery mode", "locked",
         "disk i/o", "unable to open", "readonly", "timeout", "timed out")


def outage(exc: BaseException) -> bool:
    """Whether `exc` says the database went away while Statuary was running (a dropped or refused
    connection, a server restarting, SQLite locked past the busy timeout): what the front-ends
    answer with DATABASE_DOWN instead of a generic fault. The transaction it broke was rolled
    back, so nothing of that request was written."""
    if isinstance(exc, (InterfaceError, StoreUnavailable)):
        return True
    if isinstance(exc, OperationalError):
        if exc.connection_invalidated:
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None)           # psycopg
        if sqlstate:
            return sqlstate.startswith(_AWAY_SQLSTATE)
        sqlite_code = getattr(exc.orig, "sqlite_errorcode", None)  # sqlite3; extended codes keep the primary in the low byte
        if sqlite_code is not None:
            return sqlite_code & 0xFF in _AWAY_SQLITE
        return any(w in str(exc.orig).lower() for w in _AWAY)
    return False


def open_database(url: str) -> Engine:
    """`create` and `upgrade`, with what can go wrong on the way said as StoreUnavailable: a
    server that cannot be reached or refuses the login, a file that is no SQLite database or
    cannot be written. The driver's own error goes to the log (`statuary -v`)."""
    parsed = make_url(url)
    sqlite = parsed.get_backend_name() == "sqlite"
    where = (f"The SQLite database {parsed.database}" if sqlite else
             f"The PostgreSQL database {parsed.database or '(default)'} at {parsed.host or 'localhost'}:{parsed.port or 5432}")
    fix = ("set DATABASE_URL to another file, or leave it empty for SQLite in the data folder" if sqlite else
           "check DATABASE_URL and that the server is running and lets this user in")
    try:
        engine = create(url)
        upgrade(engine)
    except OSError as exc:     # the SQLite file's folder cannot be made
        raise StoreUnavailable(f"{where} cannot be created ({exc.strerror or exc}); {fix}.") from None
    except DBAPIError as exc:
        log.info("opening %s failed", where, exc_info=True)
        reason = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0][:200]
        verb = "cannot be opened" if sqlite else "cannot be reached"
        raise StoreUnavailable(f"{where} {verb} ({reason}); {fix}.") from None
    return engine


def is_sqlite(engine: Engine) -> bool:
    return engine.dialect.name == "sqlite"


def create(url: str) -> Engine:
    """An engine for `url`, set up for many threads and processes writing at once."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database in (None, "", ":memory:"):
        raise ValueError("Statuary needs an SQLite file, not an in-memory database: several connections share it.")
    Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event below issue BEGIN itself (pysqlite's own is deferred).
        dbapi_connection.isolation_level = None
        cur = dbapi_connection.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=FULL")  # a commit survives power loss, not just a crash
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def writer(engine: Engine) -> Engine:
    """The same engine, but its transactions take SQLite's write lock at BEGIN."""
    return engine.execution_options(sqlite_begin="IMMEDIATE") if is_sqlite(engine) else engine


def alembic_config(connection: Any = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run `alembic upgrade <revision>` on this database, in one transaction, one process at a time."""
    from alembic import command

    with writer(engine).begin() as conn:
        if engine.dialect.name == "postgresql":
            # Two processes starting at once must not both create the tables.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7263100)")
        command.upgrade(alembic_config(conn), revision)


def downgrade(engine: Engine, revision: str) -> None:
    from alembic import command

    with writer(engine).begin() as conn:
        command.downgrade(alembic_config(conn), revision)


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


