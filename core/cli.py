"""The `statuary` command line.

    statuary generate "cat face, 3d style" --seed 42 --steps 20 --out cat.png
    statuary serve                     # web UI, and the Discord bot when DISCORD_TOKEN is set
    statuary webui [--host H] [--port N]
    statuary bot
    statuary reproduce ID | vary ID --strength 0.3 | verify ID | info FILE_OR_ID | history
    statuary worker                    # runs jobs from the job queue (STATUARY_BROKER_URL)
    statuary status                    # workers alive, jobs waiting and running
    statuary train ...                 # trains the default model (see models/default/MODEL_CARD.md)

Every subcommand reads settings from the environment and .env (see .env.example).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

from core.cli_options import GENERATE_FLAGS, Parser, add_request_arguments, flag_names, request_from_args
from core.settings import Settings, SettingsError, load_settings


class Context:
    """What subcommands share: settings, and lazily the store and the one job service.

    Every subcommand's function is called as func(args, ctx) with this object."""

    def __init__(self, settings: Settings, model_config: str | None = None):
        self.settings = settings
        self.model_config = model_config
        self._store = None
        self._service = None
        self._lock = threading.Lock()

    def store(self):
        """The record of every generation (storage.open_store), opened once."""
        with self._lock:
            if self._store is None:
                from storage import open_store

                self._store = open_store(self.settings)
            return self._store

    def service(self):
        """The job service: in this process (the default), or Celery workers when STATUARY_BROKER_URL is set."""
        store = self.store()
        with self._lock:
            if self._service is None and self.settings.broker_url:
                from core.distributed.service import CeleryJobService

                self._service = CeleryJobService(self.settings, store)
            elif self._service is None:
                from core.service import create_service

                self._service = create_service(self.settings, recorder=store, model_config=self.model_config)
            return self._service

    def close(self) -> None:
        if self._service is not None:
            self._service.close()


def _quiet_libraries() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)


def cli_owner():
    """Who runs the command line: one rule for every subcommand (generate, reproduce, vary,
    verify, history --owner), so one person is one owner. The login name as getpass reads it
    (LOGNAME, USER, ... then the password database), or 'cli' where there is none."""
    import getpass

    from core.jobs import Owner

    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 -- no login name (a container): still a valid owner
        user = "cli"
    return Owner("cli", user, user)


def print_progress(handle) -> Any:
    """Follow a job on stderr; return its result (raises JobFailed / JobCancelled)."""
    from core.jobs import Progress, Queued, Started

    for event in handle.iter_events():
        if isinstance(event, Queued):
            print(f"queued: position {event.position}", file=sys.stderr)
        elif isinstance(event, Started):
            print("started", file=sys.stderr)
        elif isinstance(event, Progress) and (event.step == event.total or event.step % 5 == 0):
            print(f"step {event.step}/{event.total}", file=sys.stderr)
    result = handle.result()
    from core.prompts import result_notes

    for note in result_notes(result.fingerprint):  # a prompt cut at the text encoder's window
        print(f"statuary: {note}", file=sys.stderr)
    return result


# What an unforeseen failure says at the terminal of a one-shot command, which has no server log to
# point at: the job's own ERROR line, printed just above it, names the error.
UNEXPECTED_HERE = ("Something went wrong while making this picture; the ERROR line above names the error "
                   "(run the command again with statuary -v to see where it happened). Try again, and if "
                   "it keeps failing, report that error.")


def job_did_not_finish(exc: Exception, ctx: Context) -> str:
    """The line for a job that failed or was cancelled. With a broker the job ran on a worker, whose
    log holds the error; here it was logged on this terminal."""
    from core.jobs import UNEXPECTED

    reason = str(exc)
    if reason == UNEXPECTED and not ctx.settings.broker_url:
        reason = UNEXPECTED_HERE
    return f"statuary: the job did not finish: {reason}"


def out_problem(out: str | None) -> str | None:
    """Why --out cannot be written, said before any job runs; None when it can. The folders it
    names are made when the pictures are written."""
    if not out or Path(out).is_dir():
        return None
    folder = Path(out).absolute().parent
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        return (f"out: {out} cannot be written, as {folder} is not a folder this user can write; "
                "give a file or folder where you can.")
    return None


def write_outputs(result, out: str | None) -> int:
    """Copy each image's PNG (with its recipe) to --out: that file (numbered when there are
    several), or into that folder as <id>.png. The pictures are in the store whatever happens
    here: a copy that fails says where they are. Returns the exit status."""
    import shutil

    status = 0
    for img in result.images:
        target = None
        if out:
            base = Path(out)
            if base.is_dir():
                target = base / f"{img.id}.png"
            else:
                target = base if len(result.images) == 1 else base.with_name(f"{base.stem}-{img.index + 1}{base.suffix or '.png'}")
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                if img.path:
                    shutil.copyfile(img.path, target)
                else:
                    img.image.save(target, format="PNG")
            except OSError as exc:
                print(f"statuary: {target} could not be written ({exc.strerror or exc}); the picture is kept as "
                      f"id {img.id}" + (f" in {img.path}" if img.path else ""), file=sys.stderr)
                target, status = None, 1
        where = target or img.path
        print(f"{where}  id {img.id}  seed {img.seed}" + (f"  variation seed {img.variation_seed}" if img.variation_seed is not None and result.request.variation_strength > 0 else ""))
    return status


def cmd_generate(args, ctx: Context) -> int:
    from core.jobs import JobCancelled, JobFailed, QueueFull
    from core.request import InvalidRequest

    try:
        request = request_from_args(args)
        try:
            request.validate()  # the model-independent checks, before loading anything
        except InvalidRequest as exc:
            if not any(e.field in ("width", "height") for e in exc.errors):
                raise
            # Which sides are allowed is the model's to say: the sentence must name its range,
            # not the 8 to 4096 any model might take, so load it and check against it.
            request.validate(ctx.service().limits)
        problem = out_problem(args.out)
        if problem:
            print(f"statuary: {problem}", file=sys.stderr)
            return 2
        service = ctx.service()
        handle = service.submit(request, cli_owner())
        vocab = getattr(service, "vocabulary", None)
        if vocab is not None and not vocab.knows(request.prompt):   # it still runs
            print(f"statuary: {vocab.hint('statuary words')}", file=sys.stderr)
        result = print_progress(handle)
    except (InvalidRequest, QueueFull) as exc:
        print(f"statuary: {flag_names(exc, GENERATE_FLAGS)}", file=sys.stderr)
        return 2
    except (JobFailed, JobCancelled) as exc:
        print(job_did_not_finish(exc, ctx), file=sys.stderr)
        return 1
    return write_outputs(result, args.out)


def cmd_serve(args, ctx: Context, with_bot: bool = True, with_webui: bool = True) -> int:
    s = ctx.settings
    service, store = ctx.service(), ctx.store()
    bot_thread = None
    if with_bot and s.discord_token:
        from bot.runner import run_in_thread

        bot_thread = run_in_thread(service, store, s)
    elif with_bot and not with_webui:
        print("statuary: DISCORD_TOKEN is not set. Create a bot application (see README, 'Discord bot') and put "
              "its token in .env as DISCORD_TOKEN=...", file=sys.stderr)
        return 2
    elif with_bot:
        print("statuary: DISCORD_TOKEN is not set, so the Discord bot is off; the web UI runs alone.", file=sys.stderr)
    try:
        if with_webui:
            from webui.app import launch

            launch(service, store, s, host=getattr(args, "host", None), port=getattr(args, "port", None))
        elif bot_thread is not None:
            while bot_thread.is_alive():  # join in slices so Ctrl-C reaches us
                bot_thread.join(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        if bot_thread is not None and bot_thread.is_alive():
            bot_thread.stop()
        ctx.close()
    return 2 if (not with_webui and bot_thread is not None and bot_thread.error) else 0


def cmd_worker(args, ctx: Context) -> int:
    if not ctx.settings.broker_url:
        print("statuary: a worker takes its jobs from the job queue: set STATUARY_BROKER_URL (redis://host:6379/0) "
              "and DATABASE_URL (PostgreSQL), the same as the web UI and the bot use.", file=sys.stderr)
        return 2
    from core.distributed.worker import run_worker

    return run_worker(ctx.settings, model_config=ctx.model_config, loglevel="INFO" if args.verbose else "WARNING")


def cmd_status(args, ctx: Context) -> int:
    """Workers alive, jobs waiting and running (with a broker); what this machine would run otherwise."""
    import json as _json

    s = ctx.settings
    if not s.broker_url:
        note = "jobs run inside each statuary process (no STATUARY_BROKER_URL): nothing to show between processes"
        print(_json.dumps({"broker": None, "note": note}) if args.json else note)   # --json is JSON either way
        return 0

    from core.distributed.broker import redis_client, unreachable
    from core.distributed.quota import Line
    from core.distributed.service import alive_workers

    r = redis_client(s.broker_url)
    try:
        line = Line(r)
        workers, waiting, running = alive_workers(r), line.waiting_count(), line.running()
    except Exception:  # noqa: BLE001 -- redis.ConnectionError and friends
        print(f"statuary: {unreachable(s.broker_url).split(', so')[0]}.", file=sys.stderr)
        return 1
    if args.json:
        print(_json.dumps({"workers": workers, "queued": waiting, "running": len(running)}))
        return 0
    print(f"workers alive: {len(workers)}")
    for w in workers:
        print(f"  {w['name']}  {w.get('device', '')}  running {w.get('running', 0)} of {w.get('batch_max', 1)}")
    print(f"jobs waiting: {waiting}")
    print(f"jobs running: {len(running)}")


def cmd_loras(args, ctx: Context) -> int:
    from core.lora import folder_catalog

    folder = ctx.settings.lora_folder
    catalog = folder_catalog(folder)
    for item in catalog:
        words = ", ".join(item["trigger_words"])
        print(f"{item['name']}" + (f"  trigger words: {words}" if words else ""))
    print(f"{len(catalog)} LoRA files in {folder}; use one as <lora:NAME:0.8> in a prompt or --lora NAME:0.8",
          file=sys.stderr)
    return 0


def cmd_words(args, ctx: Context) -> int:
    """The subjects the model knows (its folder's vocabulary.json), by group; or those a search finds."""
    from core.loader import require_model_folder
    from core.vocabulary import HOW_TO_ASK, ModelVocabulary

    path = Path(ctx.settings.model_spec).expanduser()
    if path.is_dir():
        require_model_folder(path)   # read without loading the weights
    vocab = ModelVocabulary.load(path) if path.is_dir() else None
    if vocab is None:
        print(f"statuary: {path.name or path} has no word list: it is a Stable Diffusion checkpoint, not the emoji "
              "model, so describe what you want in your own words.", file=sys.stderr)
        return 0
    if args.search is not None and args.search.strip():   # an empty search lists them all
        found = vocab.find(args.search)
        for e in found:
            print(e.line())
        if not found:
            print(f"statuary: no subject of this model has a word starting with \"{args.search}\"; "
                  f"`statuary words` lists all {len(vocab.emoji)}.", file=sys.stderr)
            return 1
        return 0
    for group, subjects in vocab.by_category().items():
        print(f"{group} ({len(subjects)}): " + ", ".join(e.label for e in subjects))
    print(f"{len(vocab.emoji)} subjects. {HOW_TO_ASK} `statuary words SEARCH` shows every word for a subject.",
          file=sys.stderr)
    return 0


def cmd_train(args, ctx: Context) -> int:
    from training.train import main as train_main

    return train_main(args.rest)


SERVERS = ("serve", "webui", "bot", "worker")   # commands that run until stopped, with a log to read


def build_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = Parser(prog="statuary", description="Self-hosted text-to-image for communities.")
    parser.add_argument("--model", help="model to use instead of STATUARY_MODEL (folder, .safetensors or hub id)")
    parser.add_argument("--model-config", help="diffusers folder giving a single-file checkpoint its configs offline")
    parser.add_argument("--device", help="instead of STATUARY_DEVICE: auto, cpu, cuda, cuda:N, mps")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the service does")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("generate", help="make images from a prompt and write PNGs")
    p.add_argument("prompt", help="what to draw; the embedded default model draws emoji, and the words it knows "
                                  "are listed by `statuary words` and in models/default/VOCABULARY.md "
                                  "(e.g. \"cat, 3d style\")")
    add_request_arguments(p)
    p.add_argument("--out", help="PNG file to write (numbered when --count > 1), or a folder to write <id>.png "
                                 "into; default: only the store")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("serve", help="run the web UI, and the Discord bot when DISCORD_TOKEN is set")
    p.add_argument("--host", help="instead of STATUARY_HOST")
    p.add_argument("--port", type=int, help="instead of STATUARY_PORT")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("webui", help="run the web UI alone")
    p.add_argument("--host", help="instead of STATUARY_HOST")
    p.add_argument("--port", type=int, help="instead of STATUARY_PORT")
    p.set_defaults(func=lambda a, c: cmd_serve(a, c, with_bot=False))

    p = sub.add_parser("bot", help="run the Discord bot alone")
    p.set_defaults(func=lambda a, c: cmd_serve(a, c, with_webui=False))

    p = sub.add_parser("worker", help="run jobs from the job queue (STATUARY_BROKER_URL) on this machine's model")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("status", help="workers alive, jobs waiting and running (with STATUARY_BROKER_URL)")
    p.add_argument("--json", action="store_true", help="print it as JSON")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("loras", help="list the LoRA files in STATUARY_LORA_DIR with their trigger words")
    p.set_defaults(func=cmd_loras)

    p = sub.add_parser("words", help="the subjects the model knows how to draw (the default model's word list)")
    p.add_argument("search", nargs="?", help="part of a word: the subjects it finds, with every word for each")
    p.set_defaults(func=cmd_words)

    p = sub.add_parser("train", help="train the default model (python -m training.train --help)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_train)

    from storage.cli import add_commands

    add_commands(sub, None)
    return parser, sub


def _without_traceback(record: logging.LogRecord) -> bool:
    """A log filter for a one-shot command's terminal: the record's line, not its traceback."""
    record.exc_info = record.exc_text = record.stack_info = None
    return True


def main(argv: list[str] | None = None) -> int:
    _quiet_libraries()
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["train"]:  # training has its own options (argparse's REMAINDER drops a leading --help)
        from training.train import main as train_main

        return train_main(argv[1:])
    parser, _ = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One job, one person at the terminal: a job's foreseen failure (out of memory, a full disk, a
    # JobError) is the "statuary: ..." sentence the command prints; a server logs it as well. An
    # unforeseen one is logged as its ERROR line; its traceback is for -v.
    quiet = not args.verbose and args.command not in SERVERS
    service_log = logging.getLogger("core.service")
    level = service_log.level
    if quiet:
        service_log.setLevel(logging.ERROR)
        service_log.addFilter(_without_traceback)
    try:
        return _run_command(args)
    finally:   # main() runs in-process too (tests): the logger is as it was
        if quiet:
            service_log.removeFilter(_without_traceback)
            service_log.setLevel(level)


def _run_command(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    if args.model:
        env["STATUARY_MODEL"] = args.model
    if args.device:
        env["STATUARY_DEVICE"] = args.device
    try:
        settings = load_settings(env)
    except SettingsError as exc:
        print(f"statuary: {exc}", file=sys.stderr)
        return 2
    ctx = Context(settings, model_config=args.model_config)
    from core.loader import ModelError

    try:
        return int(args.func(args, ctx) or 0)
    except KeyboardInterrupt:   # Ctrl-C: the finally below cancels a job of this process's, and the record says so
        print("statuary: stopped (Ctrl-C); " + (
            "a job already queued goes on on the workers and is kept (statuary history)." if settings.broker_url
            else "a job that had not finished is recorded as cancelled."), file=sys.stderr)
        return 130
    except ModelError as exc:
        print(f"statuary: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 -- only the broker's and the record's one-sentence refusals
        from core.distributed.broker import BrokerUnavailable
        from storage.db import StoreUnavailable

        if not isinstance(exc, (BrokerUnavailable, StoreUnavailable)):
            raise
        print(f"statuary: {exc}", file=sys.stderr)
        return 2
    finally:
        if args.command not in SERVERS:
            ctx.close()


if __name__ == "__main__":
    sys.exit(main())
