"""What every tab of the web UI shares: who the browser is, the app's state, following a job.

Each tab module (webui/tabs/) gets one `WebUI` and builds its part of the page from it;
the recipe tables and messages themselves are plain functions in webui/recipes.py.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import re
import secrets
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import gradio as gr

from core.jobs import (Cancelled, Done, Failed, JobCancelled, JobFailed, JobHandle, JobResult, JobService, Owner,
                       Progress, Queued, Started)
from core.prompts import result_notes
from webui.recipes import error_html, record_markdown, status_html

PROGRESS_EVERY_S = 0.12  # at most this often a progress update goes to the browser


# ---- who the browser is ---------------------------------------------------------------------------

BROWSER_COOKIE = "statuary_browser"
BROWSER_COOKIE_MAX_AGE = 2 * 365 * 24 * 3600
_TOKEN = re.compile(r"[A-Za-z0-9_-]{32,64}")


class BrowserIdMiddleware:
    """Gives each browser a lasting identity: a random token in an HttpOnly cookie, set on the
    first response that finds none. Pages never contain it (scripts cannot read it), and the
    store keeps only a hash of it, so no one's pages or records let another browser pose as it."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or _token_from_headers(scope.get("headers") or []):
            return await self.app(scope, receive, send)
        cookie = (f"{BROWSER_COOKIE}={secrets.token_urlsafe(32)}; Path=/; Max-Age={BROWSER_COOKIE_MAX_AGE}; "
                  "HttpOnly; SameSite=Lax").encode("latin-1")

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie)]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _token_from_headers(headers) -> str | None:
    from http.cookies import SimpleCookie

    for key, value in headers:
        if key.lower() == b"cookie":
            jar = SimpleCookie()
            try:
                jar.load(value.decode("latin-1"))
            except Exception:  # noqa: BLE001 -- a malformed cookie header: as if there were none
                continue
            morsel = jar.get(BROWSER_COOKIE)
            if morsel is not None and _TOKEN.fullmatch(morsel.value):
                return morsel.value
    return None


def owner_of(request: gr.Request | None) -> Owner:
    """The person behind a browser: their login name, else the browser's lasting cookie (which
    survives a reload), else (a script without cookies) the Gradio session."""
    name = getattr(request, "username", None) if request is not None else None
    if name:
        return Owner("web", str(name), str(name))
    raw = getattr(request, "request", None) if request is not None else None
    token = _token_from_headers(getattr(raw, "headers", None) and raw.headers.raw or [])
    if token:
        digest = hashlib.sha256(token.encode()).hexdigest()
        return Owner("web", f"browser-{digest[:32]}", f"web-{digest[:6]}")
    session = (getattr(request, "session_hash", None) if request is not None else None) or "anonymous"
    return Owner("web", session, f"web-{session[:6]}")


def parse_seed(value: Any) -> int | None:
    """The seed box: empty or negative means 'random'. What is not a whole number is passed on
    as it is, for the request's validation to refuse in its words."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            try:
                value = float(value)
            except ValueError:
                return value
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return None if isinstance(value, int) and value < 0 else value


def whole(value: Any) -> Any:
    """A number box's 7.0 as 7 (anything else is left for the request's validation to judge)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def queue_text(position: int, seconds: float | None) -> str:
    """'Waiting in the queue: position 2, about 40 s' (no guess until steps have been measured)."""
    text = f"Waiting in the queue: position {position}"
    if seconds is None:
        return text
    if seconds < 60:
        return f"{text}, about {max(1, round(seconds))} s"
    return f"{text}, about {round(seconds / 60)} min"


def progress_text(image_index: int, count: int, step: int, total: int) -> str:
    """'Step 3 of 8', or for several images 'Image 2 of 2, step 1 of 8' (`total` counts every image's steps)."""
    each = max(1, total // max(1, count))
    step = min(step, each)
    return f"Step {step} of {each}" if count == 1 else f"Image {image_index + 1} of {count}, step {step} of {each}"


class WebUI:
    """The app's state shared by all browsers: the service, the store and who runs what."""

    def __init__(self, service: JobService, store: Any, settings: Any = None):
        self.service = service
        self.store = store
        self.settings = settings
        self.limits = service.limits
        self._jobs: dict[tuple[str, str], JobHandle] = {}  # (session, tab) -> its running job
        self._last_step: dict[int, float] = {}  # a followed job's request -> when its last step came
        self.step_seconds_per_mpx: float | None = None
        self._downloads = Path(tempfile.mkdtemp(prefix="statuary-webui-"))

    # ---- jobs ------------------------------------------------------------------------------------

    async def follow(self, submit, request: gr.Request | None, tab: str, status: gr.HTML,
                     preview: gr.Image | None = None):
        """Submit a job and yield ({component: value}, result-or-None) while it runs: queue
        position, progress bar, live preview. Errors become the status box's message."""
        key = (getattr(request, "session_hash", None) or "anonymous", tab)
        try:
            handle = await asyncio.to_thread(submit)
        except Exception as exc:  # noqa: BLE001 -- shown, never raised to the browser
            yield {status: error_html(exc)}, None
            return
        self._jobs[key] = handle
        count = handle.request.count
        last = 0.0
        steps_done: dict[int, int] = collections.defaultdict(int)  # per image: the job's count runs over all
        try:
            async for ev in handle.events():
                if isinstance(ev, Queued):
                    yield {status: status_html(queue_text(ev.position, self.estimate(handle.request, ev.position)),
                                               0.0)}, None
                elif isinstance(ev, Started):
                    yield {status: status_html("Starting…", 0.0)}, None
                elif isinstance(ev, Progress):
                    steps_done[ev.image_index] += 1
                    now = time.monotonic()
                    self._measure(handle.request, now)
                    if now - last < PROGRESS_EVERY_S and ev.step < ev.total:
                        continue
                    last = now
                    update = {status: status_html(progress_text(ev.image_index, count, steps_done[ev.image_index],
                                                                ev.total), ev.step / ev.total)}
                    if preview is not None:
                        update[preview] = ev.preview
                    yield update, None
                elif isinstance(ev, Done):
                    r = ev.result
                    cut = result_notes(r.fingerprint)  # a prompt cut at the text encoder's window
                    yield {status: status_html(
                        f"Done in {r.seconds:.1f} s: " + ", ".join(i.id or "?" for i in r.images)
                        + "".join(f" {note}" for note in cut), None, "ok")}, r
                elif isinstance(ev, Failed):
                    raise JobFailed(ev.reason, ev.error_type)
                elif isinstance(ev, Cancelled):
                    raise JobCancelled()
        except Exception as exc:  # noqa: BLE001
            yield {status: error_html(exc)}, None
        finally:
            self._last_step.pop(id(handle.request), None)
            if self._jobs.get(key) is handle:
                del self._jobs[key]

    # ---- the wait in the queue, from measured step times ----------------------------------------

    def _measure(self, request, now: float) -> None:
        """Seconds per step per megapixel, a moving average over the steps this UI has watched."""
        last = self._last_step.get(id(request))
        self._last_step[id(request)] = now
        if last is None or not request.width or not request.height:
            return
        per_mpx = (now - last) / (request.width * request.height / 1e6)
        self.step_seconds_per_mpx = per_mpx if self.step_seconds_per_mpx is None else (
            0.9 * self.step_seconds_per_mpx + 0.1 * per_mpx)

    def estimate(self, request, position: int) -> float | None:
        """About how long until a job at `position` starts: the jobs before it taken to be like it
        (the service does not say what they are), timed by this UI's measured steps; None before
        any step was measured."""
        if self.step_seconds_per_mpx is None or not request.width or not request.height:
            return None
        strength = request.strength if request.init_image is not None else 1.0
        steps = max(1, int(request.steps * strength)) * request.count
        return position * steps * self.step_seconds_per_mpx * request.width * request.height / 1e6

    def cancel(self, tab: str, request: gr.Request | None) -> Any:
        handle = self._jobs.get((getattr(request, "session_hash", None) or "anonymous", tab))
        if handle is None or handle.done:
            return status_html("Nothing is running here.")
        handle.cancel()
        return gr.skip()  # the job's own stream says "Cancelled." (a message here could land after it)

    # ---- files -----------------------------------------------------------------------------------

    def download_path(self, image_id: str) -> str:
        """A copy of the image's PNG named after its id (the store names files by content hash)."""
        rec = self.store.get(image_id)
        target = self._downloads / rec.id / f"statuary-{rec.id}.png"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(rec.path, target)
        return str(target)

    def timeline_path(self, image_id: str, fmt: str) -> str:
        src = Path(self.store.timeline_file(image_id, fmt))
        rec_id = image_id.strip().lower()
        target = self._downloads / rec_id / f"statuary-{rec_id}-timeline.{fmt}"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
        return str(target)

    def upload_path(self, data: bytes) -> str:
        """An uploaded image as a file the page can show."""
        path = self._downloads / "uploads" / f"{abs(hash(data))}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return str(path)

    # ---- results ---------------------------------------------------------------------------------

    def gallery(self, result: JobResult) -> list[tuple[str, str]]:
        return [(img.path, f"{img.id} · seed {img.seed}") for img in result.images]

    def show_selected(self, rec_id: str | None):
        """Recipe markdown and download button for one stored image."""
        if not rec_id:
            return "", gr.DownloadButton(value=None, interactive=False)
        rec = self.store.get(rec_id)
        return record_markdown(rec), gr.DownloadButton(value=self.download_path(rec.id), interactive=True)

    def result_updates(self, result: JobResult, gallery, ids_state, selected_state, recipe_md, download):
        ids = [img.id for img in result.images]
        md, dl = self.show_selected(ids[0])
        return {gallery: self.gallery(result), ids_state: ids, selected_state: ids[0], recipe_md: md,
                download: dl}

    def select_in(self, ids_state, selected_state, recipe_md, download):
        """A gallery's select handler: the clicked image's id, recipe and download."""
        def on_select(ids, evt: gr.SelectData):
            rec_id = ids[evt.index] if ids and evt.index is not None and evt.index < len(ids) else None
            md, dl = self.show_selected(rec_id)
            return {selected_state: rec_id, recipe_md: md, download: dl}
        return on_select
