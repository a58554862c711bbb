"""The web UI when its PostgreSQL server goes away and comes back: a sentence that says so, nothing
queued or recorded while it is away, and the next request works once it is back."""

from __future__ import annotations

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
