"""Alembic migrations on SQLite and PostgreSQL: from nothing, from 0001 with data, and back."""

from __future__ import annotations

import datetime as dt
import os

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from core.jobs import Owner
from core.request import GenerationRequest
from storage import NotFound, Store, db, open_store
from storage.models import Base
from tests.storage.helpers import FakeService


SCRIPTS = ScriptDirectory.from_config(db.alembic_config())
HEAD = SCRIPTS.get_current_head()  # other parts (bot/community.py) chain their own tables after storage's


def _diff(engine):
    """Differences between the migrated schema and storage's models (other parts' tables aside)."""
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    return [d for d in diff if not (d[0] == "remove_table" and d[1].name not in Base.metadata.tables)
            and not (d[0] == "remove_index" and d[1].table.name not in Base.metadata.tables)]


def test_revisions_are_numbered_files_in_one_line():
    revs = list(reversed(list(SCRIPTS.walk_revisions())))
    numbers = [int(os.path.basename(r.path)[:4]) for r in revs]
    assert numbers == sorted(set(numbers)) and numbers[:2] == [1, 2]
    for r in revs:
        assert r.revision.startswith(os.path.basename(r.path)[:4]), r.path
    assert SCRIPTS.get_heads() == [revs[-1].revision]


def test_upgrade_an_empty_database(db_url, make_settings):
    engine = db.create(db_url)
    assert db.current_revision(engine) is None
    with open_store(make_settings()) as store:  # open_store upgrades
        assert db.current_revision(store.engine) == HEAD
        assert _diff(store.engine) == []  # the migrated schema is exactly the models
    engine.dispose()


def test_upgrade_from_0001_keeps_data(db_url, make_settings):
    engine = db.create(db_url)
    db.upgrade(engine, "0001")
    assert db.current_revision(engine) == "0001"
    assert "deleted_ids" not in inspect(engine).get_table_names()
    now = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
    with db.writer(engine).begin() as conn:  # a row as the 0001 schema knew it
        conn.execute(text(
            "INSERT INTO generations (id, job_id, kind, status, created_at, finished_at, owner_source, owner_user_id, "
            "owner_display_name, prompt, negative_prompt, seed, count, steps, guidance, width, height, sampler, "
            "variation_strength, strength, model_id, model_sha256, software_version, noise_source, fingerprint) VALUES "
            "('gen000000001', 'job-1', 'generate', 'done', :now, :now, 'cli', 'old', 'Old Timer', 'an old lighthouse', "
            "'', 4294967295, 1, 20, 7.5, 64, 64, 'ddim', 0.0, 0.75, 'm', :sha, '0.0.9', 'cpu', '{}')"),
            {"now": now, "sha": "cd" * 32})
        conn.execute(text(
            "INSERT INTO images (id, generation_id, image_index, seed, file, sha256, bytes, width, height, created_at) "
            "VALUES ('abcd2345', 'gen000000001', 0, 4294967295, 'images/ef/x.png', :sha, 10, 64, 64, :now)"),
            {"sha": "ef" * 32, "now": now})
        # still running when that version stopped: the next start marks it interrupted
        conn.execute(text(
            "INSERT INTO generations (id, job_id, kind, status, created_at, owner_source, owner_user_id, "
            "owner_display_name, prompt, negative_prompt, seed, count, steps, guidance, width, height, sampler, "
            "variation_strength, strength, model_id, model_sha256, software_version, noise_source, fingerprint) VALUES "
            "('gen000000002', 'job-2', 'generate', 'running', :now, 'cli', 'old', '', 'x', '', 1, 1, 20, 7.0, "
            "64, 64, 'ddim', 0.0, 0.75, '', '', '0.0.9', '', '{}')"), {"now": now})
    engine.dispose()

    with open_store(make_settings()) as store:
        assert db.current_revision(store.engine) == HEAD and _diff(store.engine) == []
        rec = store.get("abcd2345")
        assert rec.request["prompt"] == "an old lighthouse" and rec.seed == 2**32 - 1
        assert rec.owner == Owner("cli", "old", "Old Timer") and rec.created == now
        assert store.history(owner="old").total == 1
        assert store.generation("gen000000002").status == "interrupted"
        # the 0002 feature works on the upgraded database
        store.delete("abcd2345", Owner("cli", "old"))
        with pytest.raises(NotFound, match="was deleted"):
            store.get("abcd2345")


def test_downgrade_to_base_and_up_again(db_url, tmp_path):
    engine = db.create(db_url)
    db.upgrade(engine)
    db.downgrade(engine, "base")
    assert db.current_revision(engine) is None
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    db.upgrade(engine)
    store = Store(engine, tmp_path / "d")
    assert FakeService(store).submit(GenerationRequest("after the round trip", seed=1), Owner("cli", "u")).result().images
    store.close()


def test_several_stores_opening_at_once_migrate_once(db_url, make_settings):
    from concurrent.futures import ThreadPoolExecutor

    settings = make_settings()
    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: open_store(settings), range(4)))
    for s in stores:
        assert db.current_revision(s.engine) == HEAD
        s.close()


@pytest.mark.postgres
def test_a_postgresql_database_that_is_not_there_is_one_sentence_at_start(postgres_server, tmp_path):
    from core.settings import load_settings
    from storage import StoreUnavailable

    settings = load_settings({"STATUARY_DATA_DIR": str(tmp_path / "data"),
                              "DATABASE_URL": postgres_server.url("no_such_db")}, dotenv_path=None)
    with pytest.raises(StoreUnavailable) as info:
        open_store(settings)
    message = str(info.value)
    assert message.startswith(f"The PostgreSQL database no_such_db at 127.0.0.1:{postgres_server.port} cannot be "
                              "reached (") and 'database "no_such_db" does not exist' in message, message
    assert message.endswith("; check DATABASE_URL and that the server is running and lets this user in.")
