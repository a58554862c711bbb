"""The Store on SQLite and PostgreSQL: what goes in comes back, operations, errors.

    .venv/bin/python -m pytest tests/storage -q
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import socket

import pytest
from PIL import Image

from core.jobs import ImageResult, JobResult, Owner
from core.request import GenerationRequest
from storage import BadMetadata, NotFound, NotYours, open_store, read_recipe
from tests.storage.helpers import FAKE_FINGERPRINT, FakeService, png_bytes

ANA = Owner("discord", "1001", "Ana", guild_id="g-77", channel_id="c-12")
BO = Owner("web", "session-b", "Bo")


def _init_and_mask(size=(64, 64)):
    init = Image.new("RGB", size, (200, 30, 30))
    mask = Image.new("L", size, 0)
    mask.paste(255, (16, 16, 48, 48))
    return png_bytes(init), png_bytes(mask)


def test_every_field_round_trips(store, fake_service):
    init, mask = _init_and_mask()
    request = GenerationRequest(
        prompt="a red cat\non a blue rug, ünïcödé ☃", negative_prompt="blurry, text", seed=2**32 - 3, count=3,
        steps=13, guidance=6.5, width=64, height=96, sampler="euler_a", variation_seed=2**32 - 2,
        variation_strength=0.25, init_image=init, strength=0.6, mask=mask)
    result = fake_service.submit(request, ANA).result()
    assert [i.index for i in result.images] == [0, 1, 2]
    resolved = request.resolve(fake_service.limits)

    for img in result.images:
        rec = store.get(img.id)
        assert rec.id == img.id and len(rec.id) == 8
        assert rec.request == {**resolved.to_dict(), "guidance": 6.5}
        assert rec.image_request == resolved.image_request(img.index).to_dict()
        assert rec.owner == ANA
        assert rec.kind == "generate" and rec.status == "done" and rec.parent_chain == ()
        assert rec.fingerprint == FAKE_FINGERPRINT
        assert rec.seed == resolved.image_seed(img.index)
        assert rec.variation_seed == 2**32 - 2 + img.index - (2**32 if img.index >= 2 else 0)
        assert rec.image_ids == tuple(i.id for i in result.images)
        assert rec.path == rec.image_paths[img.index] and str(rec.path) == img.path
        data = rec.path.read_bytes()
        assert hashlib.sha256(data).hexdigest() == rec.sha256 == img.sha256 and rec.bytes == len(data)
        assert rec.path.name == f"{rec.sha256}.png" and rec.path.parent.name == rec.sha256[:2]
        assert (rec.width, rec.height) == (64, 96)
        assert rec.created <= rec.started_at <= rec.finished_at and rec.created.tzinfo is not None

        # request_for: the image's own request, init image and mask bytes loaded by their hash
        again = store.request_for(img.id)
        assert again == resolved.image_request(img.index)
        assert again.init_image == init and again.mask == mask

    gen = store.generation(result.generation_id)
    assert gen.status == "done" and gen.job_id == result.job_id and gen.seconds == pytest.approx(0.01)
    assert gen.image_ids == tuple(i.id for i in result.images)
    assert len(gen.id) == 12


def test_png_carries_a_deterministic_recipe(store, fake_service):
    result = fake_service.submit(GenerationRequest("cat face", negative_prompt="dog", seed=123, steps=20,
                                                   guidance=7, width=64, height=64), ANA).result()
    rec = store.get(result.images[0].id)
    with Image.open(rec.path) as im:
        text = im.text
    assert text["parameters"] == ("cat face\nNegative prompt: dog\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, "
                                  "Seed: 123, Size: 64x64, Model hash: ababababab, Model: fake-model")
    info = read_recipe(rec.path)
    assert info["source"] == "statuary"
    assert info["recipe"]["request"] == rec.image_request
    assert info["recipe"]["model_sha256"] == FAKE_FINGERPRINT["model_sha256"]
    # no ids, timestamps or paths: nothing that differs between two runs
    blob = text["statuary"]
    for forbidden in (rec.id, rec.generation_id, str(store.data_dir), str(rec.created.year) + "-"):
        assert forbidden not in blob


def test_png_metadata_off_keeps_the_recipe_in_the_database(make_settings):
    with open_store(make_settings(STATUARY_PNG_METADATA="0")) as store:
        result = FakeService(store).submit(GenerationRequest("plain", seed=1), BO).result()
        rec = store.get(result.images[0].id)
        with Image.open(rec.path) as im:
            assert not im.text
        with pytest.raises(BadMetadata, match="no recipe"):
            read_recipe(rec.path)
        assert rec.image_request["prompt"] == "plain" and store.request_for(rec.id).seed == 1


def test_reproduce_and_vary_record_their_parent(store, fake_service):
    original = fake_service.submit(GenerationRequest("owl", seed=40, count=2), ANA).result().images[1]
    copy = store.reproduce(original.id, fake_service, BO).result().images[0]
    assert copy.sha256 == original.sha256 and copy.id != original.id  # same file content, new image id
    assert store.get(copy.id).path == store.get(original.id).path
    rec = store.get(copy.id)
    assert rec.kind == "reproduce" and rec.parent_id == original.id and rec.owner == BO
    assert rec.image_request["seed"] == 41

    same = store.vary(original.id, fake_service, ANA, strength=0.0).result().images[0]
    assert same.sha256 == original.sha256

    varied = store.vary(copy.id, fake_service, ANA, strength=0.3, variation_seed=9, count=2).result()
    assert [i.seed for i in varied.images] == [41, 41] and [i.variation_seed for i in varied.images] == [9, 10]
    child = store.get(varied.images[1].id)
    assert child.kind == "vary" and child.parent_chain == (copy.id, original.id)
    assert child.request["variation_strength"] == 0.3


def test_history_pages_searches_and_filters(store, fake_service):
    prompts = [f"{animal} number {i}" for i, animal in enumerate(["red cat", "blue dog", "red dog"] * 8)]
    for i, prompt in enumerate(prompts):  # 24 images, oldest first
        fake_service.submit(GenerationRequest(prompt, seed=i), ANA if i % 2 else BO).result()
    first = fake_service.submit(GenerationRequest("red cat", seed=99), BO).result().images[0]
    store.verify(first.id, fake_service)  # verify runs stay out of history by default

    page1 = store.history(page=1, per_page=10)
    assert page1.total == 25 and page1.pages == 3 and len(page1.items) == 10
    assert page1.items[0].id == first.id  # newest first
    assert [r.request["prompt"] for r in page1.items[1:4]] == [prompts[23], prompts[22], prompts[21]]
    page3 = store.history(page=3, per_page=10)
    assert len(page3.items) == 5 and page3.items[-1].request["prompt"] == prompts[0]
    seen = [r.id for p in (1, 2, 3) for r in store.history(page=p, per_page=10).items]
    assert len(set(seen)) == 25
    assert store.history(page=4, per_page=10).items == []

    reds = store.history(query="RED dog")
    assert reds.total == 8 and all("red dog" in r.request["prompt"] for r in reds.items)
    assert store.history(query="100%").total == 0 and store.history(query="_").total == 0
    assert store.history(owner=ANA).total == 12
    assert store.history(owner="Ana").total == 12 and store.history(owner="web:session-b").total == 13
    assert store.history(owner=ANA, query="cat").total == 4
    assert store.history(include_verify=True).total == 26
    with pytest.raises(ValueError):
        store.history(page=0)


def test_a_search_as_long_as_a_prompt_works_and_a_longer_one_is_a_sentence(store, fake_service):
    """A 100,000-character search was SQLite's 'LIKE or GLOB pattern too complex', which the web UI
    then read as the database being away."""
    from core.request import InvalidRequest
    from storage.store import QUERY_MAX_CHARS

    fake_service.submit(GenerationRequest("a " * 498 + "kite", seed=1), ANA).result()   # 1,000 characters
    longest = "a " * 498 + "kite"   # 499 words
    assert len(longest) == QUERY_MAX_CHARS and store.history(query=longest).total == 1
    assert store.jobs(("done",), query=longest).total == 1
    for search in (lambda q: store.history(query=q), lambda q: store.jobs(query=q)):
        with pytest.raises(InvalidRequest) as info:
            search("x" * 100_000)
        assert str(info.value) == "query: a text of 100000 characters is not allowed; use at most 1000 characters."


def test_a_statement_sqlite_refuses_is_not_taken_for_the_database_being_away(tmp_path):
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    from storage import db

    with create_engine(f"sqlite:///{tmp_path / 'x.db'}").connect() as conn:
        with pytest.raises(OperationalError) as info:
            conn.execute(text("SELECT 'a' LIKE :p"), {"p": "%" * 60_000})
    assert "too complex" in str(info.value) and not db.outage(info.value)


def test_a_postgresql_server_that_speaks_another_language_is_still_seen_going_away():
    """PostgreSQL translates its messages (lc_messages): outage() read only English words, so a German
    server's shutdown was answered as an unforeseen fault. Its SQLSTATE is the same in every language."""
    import psycopg.errors
    from sqlalchemy.exc import OperationalError

    from storage import db

    def error(orig):
        return OperationalError("SELECT 1", {}, orig)

    assert db.outage(error(psycopg.errors.AdminShutdown("Beendigung der Verbindung aufgrund von Anweisung des Administrators")))
    assert db.outage(error(psycopg.errors.CannotConnectNow("das Datenbanksystem fährt herunter")))
    assert db.outage(error(psycopg.errors.QueryCanceled("storniere Anfrage wegen Zeitüberschreitung der Anweisung")))
    # a code that names a fault of the statement is not the database being away, whatever the words
    assert not db.outage(error(psycopg.errors.DivisionByZero("division by zero near 'connect'")))


def test_delete_own_images_only(store, fake_service):
    init, _ = _init_and_mask()
    result = fake_service.submit(GenerationRequest("to delete", seed=5, count=2, init_image=init, strength=0.5), ANA).result()
    a, b = result.images
    twin = store.reproduce(a.id, fake_service, BO).result().images[0]  # shares a's file
    path_a, path_b = store.get(a.id).path, store.get(b.id).path
    input_path = store.files.find("inputs", hashlib.sha256(init).hexdigest())
    assert input_path is not None and input_path.read_bytes() == init

    with pytest.raises(NotYours, match="belongs to Ana") as err:
        store.delete(a.id, BO)
    assert isinstance(err.value, PermissionError)
    with pytest.raises(PermissionError):
        store.delete(a.id, Owner("web", "1001", "Ana"))  # same user id from another source is someone else

    store.delete(a.id, ANA)
    with pytest.raises(NotFound, match=f"image {a.id} was deleted") as nf:
        store.get(a.id)
    assert nf.value.id == a.id
    assert path_a.exists()  # the reproduction still uses the file
    assert store.get(twin.id).parent_id == a.id and store.get(twin.id).parent_chain == (a.id,)
    assert input_path.exists()  # b's generation (and the twin's) still names the init image

    store.delete(b.id, ANA)
    assert not path_b.exists()
    assert input_path.exists()  # the twin reproduces an img2img image: it needs the init image
    store.delete(twin.id, BO)
    assert not path_a.exists() and not input_path.exists()
    assert store.history().total == 0
    for gone in (a.id, b.id, twin.id):
        with pytest.raises(NotFound, match="was deleted"):
            store.request_for(gone)
        with pytest.raises(NotFound):
            store.reproduce(gone, fake_service, ANA)
    with pytest.raises(NotFound, match="was deleted"):
        store.delete(a.id, ANA)


def test_bad_ids_get_clear_errors(store, fake_service):
    for bad in ("", "abc", "abcdefghij", "ABCD-123", "0000000o", None):
        with pytest.raises(NotFound, match="is not an image id") as err:
            store.get(bad)
        assert err.value.id == str(bad)
    with pytest.raises(NotFound, match="no image with id zzzzzzzz"):
        store.get("zzzzzzzz")
    with pytest.raises(NotFound, match="zzzzzzzz"):
        fake_service.submit(GenerationRequest("child of nothing", seed=1), ANA, parent_id="zzzzzzzz")
    assert store.history(include_verify=True).total == 0  # the refused job left no row
    img = fake_service.submit(GenerationRequest("id forms", seed=1), ANA).result().images[0]
    assert store.get(f"  {img.id.upper()} ").id == img.id  # typed ids: case and spaces forgiven


def test_lifecycle_failed_cancelled_interrupted(store):
    req = GenerationRequest("lifecycle", seed=3, width=64, height=64, sampler="dpmpp_2m_karras", guidance=7.0)
    fp = dict(FAKE_FINGERPRINT)
    g1 = store.job_queued("j1", req, ANA, None, "generate", fp)
    assert store.generation(g1).status == "queued"
    store.job_started(g1)
    assert store.generation(g1).status == "running" and store.generation(g1).started_at is not None
    store.job_failed(g1, "The GPU ran out of memory for this job.", "OutOfMemory")
    g = store.generation(g1)
    assert (g.status, g.reason, g.error_type) == ("failed", "The GPU ran out of memory for this job.", "OutOfMemory")

    g2 = store.job_queued("j2", req, ANA, None, "generate", fp)
    store.job_cancelled(g2)
    assert store.generation(g2).status == "cancelled" and store.generation(g2).finished_at is not None

    # rows a live process runs are left alone; rows of a dead one become interrupted
    g3 = store.job_queued("j3", req, ANA, None, "generate", fp)
    store.job_started(g3)
    g4 = store.job_queued("j4", req, BO, None, "generate", fp)
    g5 = store.job_queued("j5", req, BO, None, "generate", fp)
    from sqlalchemy import update

    from storage.models import Generation
    with store._write() as s, s.begin():
        s.execute(update(Generation).where(Generation.id.in_([g3, g4])).values(runner=f"{socket.gethostname()}:999999999:1"))
        s.execute(update(Generation).where(Generation.id == g5).values(runner="another-machine:12:34"))
    assert sorted(store.mark_interrupted()) == sorted([g3, g4])
    assert store.generation(g3).status == "interrupted" and "running" in store.generation(g3).reason
    assert store.generation(g4).status == "interrupted" and "queued" in store.generation(g4).reason
    assert store.generation(g5).status == "queued"  # another machine's job is not ours to end...
    with store._write() as s, s.begin():
        s.execute(update(Generation).where(Generation.id == g5).values(
            created_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=7)))
    assert store.mark_interrupted() == [g5]  # ...unless it is far older than any job runs
    assert store.history(include_verify=True).total == 0  # none of them made images


def test_job_done_returns_stored_images(store):
    req = GenerationRequest("direct", seed=8, count=2, width=64, height=64).resolve(FakeService(store).limits)
    gid = store.job_queued("j", req, ANA, None, "generate", FAKE_FINGERPRINT)
    store.job_started(gid)
    images = [ImageResult(k, req.image_seed(k), None, Image.new("RGB", (64, 64), (k * 50, 0, 0)), frames=[])
              for k in range(2)]
    stored = store.job_done(gid, JobResult("j", gid, req, images, FAKE_FINGERPRINT, 1.5))
    assert [dataclasses.replace(s, id=None, path=None, sha256=None) for s in stored] == images
    for s in stored:
        rec = store.get(s.id)
        assert str(rec.path) == s.path and rec.sha256 == s.sha256 and not rec.has_timeline
        assert store.frames(s.id) == []
        with pytest.raises(NotFound, match="no denoising timeline"):
            store.timeline_file(s.id)


def test_denoising_timeline(store, fake_service):
    img = fake_service.submit(GenerationRequest("timeline", seed=4), ANA).result().images[0]
    frames = store.frames(img.id)
    assert len(frames) == 3 and frames[0].size == (16, 16)
    assert max(abs(a - b) for a, b in zip(frames[-1].resize((1, 1)).getpixel((0, 0)),
                                          img.frames[-1].resize((1, 1)).getpixel((0, 0)))) < 12
    webp = store.timeline_file(img.id, "webp")
    assert webp.suffix == ".webp" and webp.stat().st_size < 10_000
    gif = store.timeline_file(img.id, fmt="gif")
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == 3
    assert store.timeline_file(img.id, fmt="gif") == gif
    with pytest.raises(ValueError, match="webp"):
        store.timeline_file(img.id, fmt="mp4")


def test_tampered_stored_input_is_reported(store, fake_service):
    init, _ = _init_and_mask()
    img = fake_service.submit(GenerationRequest("img2img", seed=4, init_image=init, strength=0.5), ANA).result().images[0]
    path = store.files.find("inputs", hashlib.sha256(init).hexdigest())
    path.write_bytes(init + b"x")
    with pytest.raises(BadMetadata, match="changed on disk"):
        store.request_for(img.id)
    path.unlink()
    with pytest.raises(NotFound, match="init image .* is missing"):
        store.request_for(img.id)


def test_an_unresolved_request_is_refused_by_name_not_taken_for_an_id_clash(store):
    # A request whose guidance was left to the model (None) passed the check and broke the row's
    # NOT NULL, which job_queued read as five id clashes: "could not find a free generation id".
    req = GenerationRequest("open guidance", seed=1, width=64, height=64, sampler="ddim")
    with pytest.raises(ValueError, match=r"resolved request \(seed, size, sampler and guidance decided\)"):
        store.job_queued("j-open", req, ANA, None, "generate", {"model_id": "m"})
    assert store.history(include_verify=True).total == 0
