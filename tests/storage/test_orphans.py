"""The start-up sweep of orphaned files: content files no row names (a crash between writing a
job's files and committing its rows) go once they are old; young ones and named ones stay."""

from __future__ import annotations

import hashlib
import logging
import os
import time

from PIL import Image

from core.jobs import Owner
from core.request import GenerationRequest
from storage import open_store
from storage.models import Image as ImageRow
from storage.store import ORPHAN_MIN_AGE
from tests.storage.helpers import FakeService, png_bytes

OWNER = Owner("cli", "sweeper")
OLD = ORPHAN_MIN_AGE.total_seconds() + 600  # seconds in the past: past the safety margin


def _age(path, seconds: float) -> None:
    t = time.time() - seconds
    os.utime(path, (t, t))


def _orphan(store, kind: str, tag: str, ext: str):
    """A content file as a crashed job leaves it: under its final name, no row naming it."""
    data = png_bytes(Image.new("RGB", (4, 4), (len(tag), 9, 9))) + tag.encode()
    _sha, rel = store.files.put(kind, data, ext)
    return store.files.path(rel)


def test_old_orphans_go_young_orphans_and_named_files_stay(make_settings, caplog):
    settings = make_settings()
    with open_store(settings) as store:
        init = png_bytes(Image.new("RGB", (64, 64), (10, 200, 30)))
        mask = png_bytes(Image.new("L", (64, 64), 255))
        result = FakeService(store).submit(GenerationRequest("kept", seed=3, count=2, init_image=init, mask=mask,
                                                             strength=0.6), OWNER).result()
        kept = [store.get(i.id).path for i in result.images]
        kept += [store.files.find("inputs", hashlib.sha256(d).hexdigest()) for d in (init, mask)]
        with store._read() as s:
            kept += [store.files.find("timelines", s.get(ImageRow, i.id).timeline_sha256) for i in result.images]
        assert all(p is not None and p.exists() for p in kept) and len(kept) == 6

        old = [_orphan(store, "images", "old-image", "png"), _orphan(store, "inputs", "old-input", "png"),
               _orphan(store, "timelines", "old-timeline", "webp")]
        young = [_orphan(store, "images", "young-image", "png"), _orphan(store, "inputs", "young-input", "jpg"),
                 _orphan(store, "timelines", "young-timeline", "webp")]
        stranger = store.files.root / "images" / "ab" / "notes.txt"  # not named like content: not ours to judge
        stranger.parent.mkdir(parents=True, exist_ok=True)
        stranger.write_text("leave me")
        for p in old + kept + [stranger]:
            _age(p, OLD)  # named files stay however old they are
        young_but_aging = young[0]
        _age(young_but_aging, ORPHAN_MIN_AGE.total_seconds() - 600)  # inside the margin: stays

    caplog.set_level(logging.INFO, logger="storage.store")
    with open_store(settings) as store:  # the next start sweeps
        assert not any(p.exists() for p in old), [p for p in old if p.exists()]
        assert all(p.exists() for p in young), [p for p in young if not p.exists()]
        assert all(p.exists() for p in kept), [p for p in kept if not p.exists()]
        assert stranger.exists()
        assert "removed 3 orphaned file(s)" in caplog.text
        # every kept image is whole and usable: its recipe, inputs and timeline all load
        for img in result.images:
            assert store.request_for(img.id).init_image == init and store.request_for(img.id).mask == mask
            assert len(store.frames(img.id)) == 3
        assert store.remove_orphan_files() == 0  # nothing left to find


def test_reusing_old_content_makes_it_young(store):
    """A job that reuses an old orphan's bytes (same content, same name) refreshes its mtime, so a
    sweep in another process starting meanwhile leaves it for the job about to name it."""
    path = _orphan(store, "inputs", "reused", "png")
    _age(path, OLD)
    store.files.put("inputs", path.read_bytes(), "png")
    assert time.time() - path.stat().st_mtime < 60
    assert store.remove_orphan_files() == 0 and path.exists()


def test_a_file_swept_while_its_job_queues_is_put_back(store, monkeypatch):
    """The sweep and a job in another process meet: the sweep removes an old unnamed input just
    as the job (whose request uses those very bytes) commits its row. The job puts it back."""
    init = png_bytes(Image.new("RGB", (64, 64), (1, 2, 3)))
    real_put = store.files.put

    def put_then_swept(kind, data, ext):
        out = real_put(kind, data, ext)
        if kind == "inputs":
            store.files.path(out[1]).unlink()  # the other process's sweep, between put and commit
        return out

    monkeypatch.setattr(store.files, "put", put_then_swept)
    result = FakeService(store).submit(GenerationRequest("raced", seed=1, init_image=init, strength=0.5),
                                       OWNER).result()
    monkeypatch.undo()
    assert store.request_for(result.images[0].id).init_image == init
