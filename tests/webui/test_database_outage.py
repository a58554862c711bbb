"""The web UI when its PostgreSQL server goes away and comes back: a sentence that says so, nothing
queued or recorded while it is away, and the next request works once it is back; a job whose
result cannot be recorded fails in a sentence, and its failure is recorded once the database is back
(or, if the web UI stops first, the job is found interrupted at the next start)."""

from __future__ import annotations

import time

import pytest

from tests.webui.conftest import start_server, stop_server

pytestmark = pytest.mark.postgres


def test_a_request_while_the_database_is_down_is_a_sentence_and_the_next_works(own_postgres, generator,
                                                                               tiny_model_dir, tmp_path):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    srv = start_server(generator, tmp_path / "data", tiny_model_dir, DATABASE_URL=own_postgres.new_database())
    client = Client(srv.url, verbose=False)
    try:
        first = client.predict(prompt="a kite", seed=1, steps=2, api_name="/generate")
        own_postgres.halt()
        for call in (dict(prompt="a boat", seed=2, steps=2, api_name="/generate"),
                     dict(query="kite", api_name="/history"),
                     dict(image_id=first[0]["id"], api_name="/reproduce")):
            with pytest.raises(AppError) as info:
                client.predict(**call)
            message = str(info.value)
            assert message == ("The database cannot be reached just now; try again in a minute. "
                               "(The details are in the server log.)"), (call, message)
        own_postgres.resume()
        again = client.predict(prompt="a boat", seed=2, steps=2, api_name="/generate")
        history = srv.store.history()
        assert [r.request["prompt"] for r in history.items] == ["a boat", "a kite"]   # nothing from the outage
        assert srv.store.jobs(("failed", "interrupted", "cancelled")).total == 0
        assert again[0]["id"] != first[0]["id"]
    finally:
        client.close()
        stop_server(srv)


def _a_job_fails_while_the_database_is_away(srv, generator, own_postgres, monkeypatch):
    """Run 'a kite' through /generate and halt the database while it runs: the job fails in a sentence."""
    import threading

    from gradio_client import Client
    from gradio_client.exceptions import AppError

    release = threading.Event()
    real = generator.generate

    def held(*args, **kwargs):   # the job runs while the database goes away
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(generator, "generate", held)
    client = Client(srv.url, verbose=False)
    try:
        job = client.submit(prompt="a kite", seed=1, steps=2, api_name="/generate")
        deadline = time.monotonic() + 30
        while not srv.service.status()["running"]:
            assert time.monotonic() < deadline, "the job did not start"
            time.sleep(0.05)
        own_postgres.halt()
        release.set()
        with pytest.raises(AppError) as info:
            job.result(timeout=60)
        assert str(info.value) == ("The job failed: " + DATABASE_GONE), str(info.value)
    finally:
        release.set()
        client.close()
        monkeypatch.setattr(generator, "generate", real)


DATABASE_GONE = ("The database could not be reached to record this job, so its pictures were not kept; "
                 "try again in a minute.")


def test_a_job_whose_result_cannot_be_recorded_fails_in_a_sentence_and_is_interrupted_at_the_next_start(
        own_postgres, generator, tiny_model_dir, tmp_path, monkeypatch):
    from storage import open_store

    srv = start_server(generator, tmp_path / "data", tiny_model_dir, DATABASE_URL=own_postgres.new_database())
    try:
        _a_job_fails_while_the_database_is_away(srv, generator, own_postgres, monkeypatch)
    finally:
        stop_server(srv)
    own_postgres.resume()
    # The next start is a new process: the one that ran the job (this test's) counts as gone.
    monkeypatch.setattr("storage.store.runner_alive", lambda token: False)
    with open_store(srv.settings) as store:
        assert store.history().total == 0
        ended = store.jobs(("interrupted",))
        assert [j.request["prompt"] for j in ended.items] == ["a kite"] and ended.items[0].reason


def test_the_failure_is_recorded_once_the_database_is_back(own_postgres, generator, tiny_model_dir, tmp_path,
                                                           monkeypatch):
    # Without a restart: the row must not read 'running' for as long as the web UI runs on.
    from gradio_client import Client

    srv = start_server(generator, tmp_path / "data", tiny_model_dir, DATABASE_URL=own_postgres.new_database())
    try:
        _a_job_fails_while_the_database_is_away(srv, generator, own_postgres, monkeypatch)
        own_postgres.resume()
        client = Client(srv.url, verbose=False)
        try:
            client.predict(prompt="a boat", seed=2, steps=2, api_name="/generate")
        finally:
            client.close()
        failed = srv.store.jobs(("failed",))
        assert [(j.request["prompt"], j.reason) for j in failed.items] == [("a kite", DATABASE_GONE)]
        assert srv.store.jobs(("running", "queued")).total == 0
        assert [r.request["prompt"] for r in srv.store.history().items] == ["a boat"]
    finally:
        stop_server(srv)
