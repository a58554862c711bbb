"""Content-addressed files under the data dir, written atomically.

    DATA_DIR/images/ab/abcdef....png      generated images (name = sha256 of the file)
    DATA_DIR/inputs/ab/abcdef....png      init images and masks, the uploaded bytes as given
    DATA_DIR/timelines/ab/abcdef....webp  denoising timeline: the preview frames, animated
    DATA_DIR/timelines/ab/abcdef....gif   the same as GIF, made on first request

A file is written to a temporary name in its own folder, flushed to disk, then renamed over
its final name, so a reader (or a crash) sees the whole file or none of it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterator

KINDS = ("images", "inputs", "timelines")
TIMELINE_FRAME_MS = 150
TIMELINE_LAST_FRAME_MS = 1200
TIMELINE_QUALITY = 75
TMP_PREFIX = ".tmp-"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that `path` never holds a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TMP_PREFIX}{socket.gethostname()}-{os.getpid()}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)  # the rename itself survives a power cut


def remove_stale_temp_files(root: Path) -> int:
    """Delete temp files that a killed writer on this machine left behind (its pid is gone)."""
    removed = 0
    host = socket.gethostname()
    for tmp in root.glob(f"*/*/{TMP_PREFIX}*"):
        try:
            tmp_host, pid = tmp.name[len(TMP_PREFIX):].rsplit("-", 2)[:2]
            if tmp_host != host:
                continue
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed += 1
        except (ValueError, OSError):
            continue
    return removed


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every OS; the data is already flushed
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def image_extension(data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    return "bin"


class FileStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        for kind in KINDS:
            (self.root / kind).mkdir(parents=True, exist_ok=True)

    def relpath(self, kind: str, digest: str, ext: str) -> str:
        assert kind in KINDS and len(digest) == 64, (kind, digest)
        return f"{kind}/{digest[:2]}/{digest}.{ext}"

    def path(self, relpath: str) -> Path:
        return self.root / relpath

    def put(self, kind: str, data: bytes, ext: str) -> tuple[str, str]:
        """Store `data`; return (sha256, relative path). Existing content is not rewritten."""
        digest = sha256(data)
        rel = self.relpath(kind, digest, ext)
        path = self.path(rel)
        try:
            same = path.stat().st_size == len(data)
        except FileNotFoundError:
            same = False
        if same:
            # Reused content counts as just written: the start-up orphan sweep spares recent files.
            with contextlib.suppress(OSError):
                os.utime(path)
            if path.exists():
                return digest, rel
        atomic_write(path, data)
        return digest, rel

    def contents(self) -> Iterator[tuple[str, str, Path]]:
        """(kind, sha256, path) of every content file: KIND/ab/abcdef....ext. Temp files and
        anything not named like content are not listed."""
        for kind in KINDS:
            for path in sorted((self.root / kind).glob("*/*")):
                digest = path.name.split(".", 1)[0]
                if (len(digest) == 64 and "." in path.name and path.parent.name == digest[:2]
                        and all(c in "0123456789abcdef" for c in digest) and path.is_file()):
                    yield kind, digest, path

    def find(self, kind: str, digest: str) -> Path | None:
        """The file with this content in `kind`, whatever its extension."""
        if not (len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
            return None
        matches = sorted((self.root / kind / digest[:2]).glob(f"{digest}.*"))
        return matches[0] if matches else None

    def remove(self, kind: str, digest: str) -> None:
        """Delete every file of this content in `kind` (a timeline's GIF goes with its WebP)."""
        if self.find(kind, digest) is None:
            return
        for p in (self.root / kind / digest[:2]).glob(f"{digest}.*"):
            with contextlib.suppress(OSError):
                p.unlink()


# ---- the denoising timeline ---------------------------------------------------------------


def encode_timeline(frames: list[Any]) -> bytes | None:
    """The preview frames as one small animated WebP (None if there are none). Lossy: these are
    previews, and a few KB per image is the point."""
    if not frames:
        return None
    rgb = [f.convert("RGB") for f in frames]
    buf = io.BytesIO()
    durations = [TIMELINE_FRAME_MS] * (len(rgb) - 1) + [TIMELINE_LAST_FRAME_MS]
    rgb[0].save(buf, format="WEBP", save_all=True, append_images=rgb[1:], quality=TIMELINE_QUALITY,
                method=4, duration=durations, loop=0)
    return buf.getvalue()


def decode_frames(data: bytes) -> list[Any]:
    from PIL import Image, ImageSequence

    with Image.open(io.BytesIO(data)) as im:
        return [frame.convert("RGB").copy() for frame in ImageSequence.Iterator(im)]


def encode_gif(frames: list[Any]) -> bytes:
    buf = io.BytesIO()
    durations = [TIMELINE_FRAME_MS] * (len(frames) - 1) + [TIMELINE_LAST_FRAME_MS]
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0,
                   disposal=1)
    return buf.getvalue()
