"""Settings, read once from the environment and an optional `.env` file.

Every setting is declared in SETTINGS below with its default and one line of explanation;
`.env.example` is that list written out (a test keeps the two in step). Unknown
`STATUARY_*` names are an error rather than silently ignored: a typo should not cost an
evening of wondering why the queue limit did not change.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "default"


@dataclasses.dataclass(frozen=True)
class Setting:
    env: str
    default: str
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("STATUARY_MODEL", "default",
            "Model to load: 'default' (models/default), a diffusers folder, a single .safetensors file, or a hub id (online only)."),
    Setting("STATUARY_DEVICE", "auto", "Where the model runs: auto (cuda, then mps, then cpu), cpu, cuda, cuda:N or mps."),
    Setting("STATUARY_DTYPE", "auto", "Weights dtype: auto (float16 on cuda/mps, float32 on cpu), float32, float16 or bfloat16."),
    Setting("STATUARY_THREADS", "0", "CPU threads for torch; 0 leaves torch's default (all cores)."),
    Setting("STATUARY_DATA_DIR", "data", "Folder for the database, image files and caches (relative to the working directory)."),
    Setting("STATUARY_LORA_DIR", "", "Folder of LoRA files (.safetensors only), used as <lora:name:0.8> in prompts; empty means DATA_DIR/loras."),
    Setting("DATABASE_URL", "", "SQLAlchemy URL of the database; empty means SQLite at DATA_DIR/statuary.db. PostgreSQL: postgresql+psycopg://user:pass@host/db"),
    Setting("STATUARY_BROKER_URL", "", "Redis URL of the job queue shared by several machines (redis://host:6379/0); empty runs jobs in this process. Needs DATABASE_URL (PostgreSQL)."),
    Setting("STATUARY_QUEUE_MAX", "64", "Jobs waiting in the queue at most; past it, submit answers 'queue full'."),
    Setting("STATUARY_QUEUE_PER_OWNER", "4", "Jobs one owner (a browser session, a Discord user) may have waiting at once."),
    Setting("STATUARY_BATCH_MAX", "1", "Most images denoised together in one UNet call (GPU batching; 1 = one image at a time, the CPU default)."),
    Setting("STATUARY_BATCH_MEMORY_MB", "0", "Memory one batched UNet call may use, in MiB; 0 = measured at start on a GPU (80% of what is free), no cap on the CPU."),
    Setting("STATUARY_DECODE_CHUNK", "1", "With batching: finished images decoded between two denoising steps while other images are still running."),
    Setting("STATUARY_ATTENTION", "sdpa", "UNet attention: sdpa (torch's fused scaled_dot_product_attention) or math (the plain matmul-softmax-matmul)."),
    Setting("STATUARY_CHANNELS_LAST", "0", "1 stores the UNet's weights and inputs channels_last (often faster convolutions on a GPU)."),
    Setting("STATUARY_COMPILE", "0", "1 compiles the UNet with torch.compile at start (slow first steps, faster after; GPU only in practice)."),
    Setting("STATUARY_MAX_SIDE", "0", "Largest width or height accepted, in pixels; 0 means twice the model's native size."),
    Setting("STATUARY_PNG_METADATA", "1", "1 embeds the recipe (prompt, seed, ...) in every PNG; 0 keeps it only in the database."),
    Setting("STATUARY_PREVIEW_FRAMES", "8", "Preview frames kept per image for the denoising timeline."),
    Setting("STATUARY_HOST", "127.0.0.1", "Address the web UI listens on; 0.0.0.0 listens on every interface."),
    Setting("STATUARY_PORT", "7860", "Port of the web UI."),
    Setting("STATUARY_AUTH", "", "Optional web UI login as user:password (several separated by commas); empty means no login."),
    Setting("STATUARY_UPLOAD_MAX_MB", "10", "Largest upload the web UI accepts, in MiB."),
    Setting("STATUARY_SHARE", "0", "1 asks Gradio for a public share link (off by default)."),
    Setting("DISCORD_TOKEN", "", "Discord bot token; when set, `statuary serve` also runs the bot."),
    Setting("STATUARY_PUBLIC_URL", "", "The web UI's address as people reach it (https://pictures.example.org); the bot's 'Vary region' button links there, and is hidden when this is empty."),
)

_KNOWN = {s.env for s in SETTINGS}


class SettingsError(ValueError):
    """A setting has a value Statuary cannot use."""


@dataclasses.dataclass(frozen=True)
class Settings:
    model: str
    device: str
    dtype: str
    threads: int
    data_dir: Path
    database_url: str
    queue_max: int
    queue_per_owner: int
    batch_max: int
    max_side: int
    png_metadata: bool
    preview_frames: int
    host: str
    port: int
    auth: str
    upload_max_mb: int
    share: bool
    discord_token: str
    batch_memory_mb: int = 0
    decode_chunk: int = 1
    attention: str = "sdpa"
    channels_last: bool = False
    compile: bool = False
    broker_url: str = ""
    lora_dir: Path | None = None  # None: data_dir / "loras"
    public_url: str = ""

    @property
    def lora_folder(self) -> Path:
        return self.lora_dir or self.data_dir / "loras"

    @property
    def model_spec(self) -> str:
        return str(DEFAULT_MODEL_DIR) if self.model == "default" else self.model


def _int(env: dict[str, str], name: str, lo: int, hi: int) -> int:
    raw = env[name]
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number; use an integer from {lo} to {hi}.") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name}={value} is out of range; use an integer from {lo} to {hi}.")
    return value


def _bool(env: dict[str, str], name: str) -> bool:
    raw = env[name].strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{name}={env[name]!r} is not a switch; use 1 or 0.")


DATABASE_FORMS = ("use postgresql+psycopg://user:password@host/database, sqlite:////path/to/statuary.db, "
                  "or leave it empty for SQLite in the data folder.")


def shown_url(raw: str) -> str:
    """A database or broker URL as it may be printed: with its password, if any, as ***."""
    return re.sub(r"(//[^/@:]*:)[^@]*@", r"\1***@", raw)


def _database_url(raw: str, data_dir: Path) -> str:
    """DATABASE_URL checked before anything connects: an SQLAlchemy URL of SQLite (a file) or
    PostgreSQL, whose driver is installed. Reaching the server is open_store's to say."""
    if not raw:
        return f"sqlite:///{data_dir / 'statuary.db'}"
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    shown = shown_url(raw)
    try:
        url = make_url(raw)
    except ArgumentError:
        raise SettingsError(f"DATABASE_URL={shown!r} is not a database URL; {DATABASE_FORMS}") from None
    backend = url.get_backend_name()
    if backend == "postgres":   # what Heroku and others print; SQLAlchemy dropped the name
        raise SettingsError(f"DATABASE_URL={shown!r} starts with postgres://, which SQLAlchemy does not accept; "
                            "write postgresql+psycopg:// instead.")
    if backend not in ("sqlite", "postgresql"):
        raise SettingsError(f"DATABASE_URL={shown!r} names a {backend} database; Statuary keeps its record in "
                            f"PostgreSQL or SQLite: {DATABASE_FORMS}")
    try:
        url.get_dialect().import_dbapi()
    except (ImportError, NoSuchModuleError):
        raise SettingsError(f"DATABASE_URL={shown!r} asks for the driver {url.get_driver_name()}, which is not "
                            "installed; use postgresql+psycopg://user:password@host/database.") from None
    if backend == "sqlite" and url.database in (None, "", ":memory:"):
        raise SettingsError(f"DATABASE_URL={shown!r} is an in-memory SQLite database, which the job service's "
                            f"threads cannot share; {DATABASE_FORMS}")
    return raw


def load_settings(environ: dict[str, str] | None = None, dotenv_path: str | os.PathLike | None = ".env") -> Settings:
    """Settings from `environ` (default: os.environ) over the `.env` file over the defaults."""
    values = {s.env: s.default for s in SETTINGS}
    if dotenv_path and Path(dotenv_path).is_file():
        from dotenv import dotenv_values

        values.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    env = dict(os.environ if environ is None else environ)
    values.update({k: v for k, v in env.items() if k in _KNOWN})
    unknown = sorted(k for k in list(env) + list(values) if k.startswith("STATUARY_") and k not in _KNOWN)
    if unknown:
        raise SettingsError(f"Unknown setting(s) {', '.join(unknown)}; known settings are listed in .env.example.")

    device = values["STATUARY_DEVICE"].strip().lower()
    if not (device in ("auto", "cpu", "cuda", "mps") or (device.startswith("cuda:") and device[5:].isdigit())):
        raise SettingsError(f"STATUARY_DEVICE={device!r} is not a device; use auto, cpu, cuda, cuda:N or mps.")
    dtype = values["STATUARY_DTYPE"].strip().lower()
    if dtype not in ("auto", "float32", "float16", "bfloat16"):
        raise SettingsError(f"STATUARY_DTYPE={dtype!r} is not a dtype; use auto, float32, float16 or bfloat16.")
    auth = values["STATUARY_AUTH"].strip()
    if auth and not all(":" in pair and pair.split(":", 1)[0] for pair in auth.split(",")):
        raise SettingsError("STATUARY_AUTH must be user:password pairs separated by commas.")
    attention = values["STATUARY_ATTENTION"].strip().lower()
    if attention not in ("sdpa", "math"):
        raise SettingsError(f"STATUARY_ATTENTION={attention!r} is not an attention kind; use sdpa or math.")
    public_url = values["STATUARY_PUBLIC_URL"].strip()
    if public_url and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", public_url):
        raise SettingsError(f"STATUARY_PUBLIC_URL={public_url!r} is not a web address; use "
                            "http(s)://host[:port][/path], or leave it empty to hide the bot's 'Vary region' button.")
    data_dir = Path(values["STATUARY_DATA_DIR"]).expanduser().resolve()
    broker_url = values["STATUARY_BROKER_URL"].strip()
    database_url = values["DATABASE_URL"].strip()
    if broker_url and not broker_url.startswith(("redis://", "rediss://", "unix://")):
        raise SettingsError(f"STATUARY_BROKER_URL={shown_url(broker_url)!r} is not a Redis URL; use redis://host:6379/0 "
                            "(or leave it empty to run jobs in this process).")
    if broker_url and (not database_url or database_url.startswith("sqlite")):
        raise SettingsError("STATUARY_BROKER_URL is set but the database is SQLite, which several machines cannot "
                            "share; set DATABASE_URL to a PostgreSQL URL (postgresql+psycopg://user:pass@host/db).")
    return Settings(
        model=values["STATUARY_MODEL"].strip() or "default",
        device=device,
        dtype=dtype,
        threads=_int(values, "STATUARY_THREADS", 0, 1024),
        data_dir=data_dir,
        database_url=_database_url(database_url, data_dir),
        queue_max=_int(values, "STATUARY_QUEUE_MAX", 1, 100_000),
        queue_per_owner=_int(values, "STATUARY_QUEUE_PER_OWNER", 1, 10_000),
        batch_max=_int(values, "STATUARY_BATCH_MAX", 1, 256),
        max_side=_int(values, "STATUARY_MAX_SIDE", 0, 8192),
        png_metadata=_bool(values, "STATUARY_PNG_METADATA"),
        preview_frames=_int(values, "STATUARY_PREVIEW_FRAMES", 0, 200),
        host=values["STATUARY_HOST"].strip(),
        port=_int(values, "STATUARY_PORT", 1, 65535),
        auth=auth,
        upload_max_mb=_int(values, "STATUARY_UPLOAD_MAX_MB", 1, 1024),
        share=_bool(values, "STATUARY_SHARE"),
        discord_token=values["DISCORD_TOKEN"].strip(),
        batch_memory_mb=_int(values, "STATUARY_BATCH_MEMORY_MB", 0, 10_000_000),
        decode_chunk=_int(values, "STATUARY_DECODE_CHUNK", 1, 256),
        attention=attention,
        channels_last=_bool(values, "STATUARY_CHANNELS_LAST"),
        compile=_bool(values, "STATUARY_COMPILE"),
        broker_url=broker_url,
        lora_dir=Path(values["STATUARY_LORA_DIR"].strip()).expanduser().resolve() if values["STATUARY_LORA_DIR"].strip() else None,
        public_url=public_url,
    )


def env_example() -> str:
    """The text of `.env.example`: every setting, commented, with its default."""
    lines = ["# Statuary settings. Copy to .env and change what you need; every line shows the default.", ""]
    for s in SETTINGS:
        lines += [f"# {s.help}", f"{s.env}={s.default}", ""]
    return "\n".join(lines)
