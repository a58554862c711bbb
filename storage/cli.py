"""Storage's subcommands of `statuary`:

    statuary reproduce ID
    statuary vary ID --strength 0.3 [--variation-seed N] [--count N]
    statuary upscale ID [--scale 2] [--steps N] [--strength 0.5] [--upscaler lanczos|latent]
    statuary verify ID
    statuary info FILE_OR_ID
    statuary history [--query Q] [--page N] [--owner USER] [--status failed|interrupted|cancelled|not-done]

core/cli.py calls `add_commands(subparsers, context)` and later runs `args.func(args, ctx)`,
where ctx has `.settings`, `.store()` and `.service()` (which builds the job service with the
store as its recorder).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from storage import pngmeta


def _owner() -> Any:
    from core.cli import cli_owner

    return cli_owner()  # the same owner as `generate`


def add_commands(subparsers: argparse._SubParsersAction, context: Any = None) -> None:
    from core.cli_options import number, whole
    from core.request import COUNT_MAX, SEED_MAX
    from storage.store import PAGE_MAX

    def bind(handler):
        return lambda args, ctx=None: _run(handler, args, ctx or context)

    p = subparsers.add_parser("reproduce", help="make an image again from its stored recipe")
    p.add_argument("id", help="the image's 8-character id")
    p.set_defaults(func=bind(cmd_reproduce))

    p = subparsers.add_parser("vary", help="variations of an image: same seed, a second seed blended in")
    p.add_argument("id", help="the image's 8-character id")
    p.add_argument("--strength", type=number("strength", 0, 1), required=True,
                   help="0 = the image again, 1 = a new picture; try 0.1-0.4")
    p.add_argument("--variation-seed", type=whole("variation-seed", 0, SEED_MAX), default=None,
                   help="the seed blended in; random if left out")
    p.add_argument("--count", type=whole("count", 1, COUNT_MAX), default=1, help="how many variations, 1-4")
    p.set_defaults(func=bind(cmd_vary))

    p = subparsers.add_parser("upscale", help="an image through the hires fix: its recipe, repainted larger")
    p.add_argument("id", help="the image's 8-character id")
    from core.cli_options import add_hires_arguments

    add_hires_arguments(p, "--")
    p.set_defaults(func=bind(cmd_upscale))

    p = subparsers.add_parser("verify", help="make an image again and say whether the pixels are identical")
    p.add_argument("id", help="the image's 8-character id")
    p.set_defaults(func=bind(cmd_verify))

    p = subparsers.add_parser("info", help="show how an image was made (a PNG file or an image id)")
    p.add_argument("target", metavar="FILE_OR_ID")
    p.add_argument("--json", action="store_true", help="print the recipe as JSON")
    p.set_defaults(func=bind(cmd_info))

    p = subparsers.add_parser("history", help="list stored images, newest first")
    p.add_argument("--query", default=None, help="only prompts containing every word of this")
    p.add_argument("--page", type=whole("page", 1, PAGE_MAX), default=1)
    p.add_argument("--per-page", type=whole("per-page", 1, 500), default=20)
    p.add_argument("--owner", default=None, help="a user id, display name or source:user_id")
    p.add_argument("--include-verify", action="store_true", help="also list verify runs")
    p.add_argument("--status", choices=STATUS_CHOICES, default="done",
                   help="done: images (the default); failed, interrupted, cancelled or not-done (all three): "
                        "the jobs that ended without images, with their reasons")
    p.set_defaults(func=bind(cmd_history))


def _run(handler, args: argparse.Namespace, ctx: Any) -> int:
    from core.jobs import JobCancelled, JobFailed, QueueFull
    from core.request import InvalidRequest
    from storage.store import NotFound, NotYours

    from core.cli import job_did_not_finish
    from core.cli_options import flag_names

    try:
        return handler(args, ctx)
    except (NotFound, NotYours, pngmeta.BadMetadata, InvalidRequest, QueueFull, ValueError) as exc:
        print(f"statuary: {flag_names(exc, FLAGS)}", file=sys.stderr)
        return 2
    except (JobFailed, JobCancelled) as exc:
        print(job_did_not_finish(exc, ctx), file=sys.stderr)
        return 1


STATUS_CHOICES = ("done", "failed", "interrupted", "cancelled", "not-done")

# The request fields these subcommands set, by the flags that set them (vary's --strength is
# the request's variation_strength).
FLAGS = {"variation_strength": "strength", "variation_seed": "variation-seed", "hires_scale": "scale",
         "hires_steps": "steps", "hires_strength": "strength", "hires_upscaler": "upscaler"}


def _print_result(result: Any, original: Any = None) -> None:
    for img in result.images:
        same = ""
        if original is not None:
            same = "  (identical file)" if img.sha256 == original.sha256 else "  (file differs)"
        print(f"{img.id}  {img.path}  seed {img.seed}"
              + (f"  variation seed {img.variation_seed}" if result.request.variation_strength > 0 else "") + same)


def cmd_reproduce(args: argparse.Namespace, ctx: Any) -> int:
    from core.cli import print_progress

    store = ctx.store()
    original = store.get(args.id)
    result = print_progress(store.reproduce(original.id, ctx.service(), _owner()))
    _print_result(result, original)
    return 0


def cmd_vary(args: argparse.Namespace, ctx: Any) -> int:
    from core.cli import print_progress

    store = ctx.store()
    handle = store.vary(args.id, ctx.service(), _owner(), args.strength, args.variation_seed, args.count)
    _print_result(print_progress(handle))
    return 0


def cmd_upscale(args: argparse.Namespace, ctx: Any) -> int:
    from core.cli import print_progress
    from core.cli_options import hires_from_args
    from core.hires import Hires

    store, service = ctx.store(), ctx.service()
    defaults = service.hires_defaults
    if not defaults.helps and args.scale is None:  # the model folder says it does not help; a given scale still runs
        raise ValueError(defaults.refusal + " Give --scale to run it anyway.")
    hires = hires_from_args(args.scale, args.steps, args.strength, args.upscaler, defaults.hires) or defaults.hires
    handle = store.upscale(args.id, service, _owner(), hires if isinstance(hires, Hires) else None)
    _print_result(print_progress(handle))
    return 0


def cmd_verify(args: argparse.Namespace, ctx: Any) -> int:
    store = ctx.store()
    v = store.verify(args.id, ctx.service(), _owner())
    if v.exact:
        print(f"{v.image_id}: exact -- the same pixels again" + (" and the same file" if v.same_file else ""))
    else:
        print(f"{v.image_id}: drifted -- largest pixel difference {v.max_pixel_diff}/255")
    for field, (then, now) in v.fingerprint_diff.items():
        print(f"  {field}: then {then!r}, now {now!r}")
    print(f"  verify run: image {v.new_image_id}")
    return 0 if v.exact else 1


def cmd_info(args: argparse.Namespace, ctx: Any) -> int:
    path = Path(args.target)
    try:
        is_file = path.is_file()
    except OSError:  # a name too long for a file name (an id pasted with a paragraph, say): not a file
        is_file = False
    if is_file:
        info = pngmeta.read_recipe(path)
        if args.json:
            print(json.dumps(info, indent=2, sort_keys=True))
            return 0
        print(f"{path}  ({'Statuary' if info['source'] == 'statuary' else 'A1111-style'} recipe)")
        if info["source"] == "statuary":
            _print_request(info["recipe"]["request"], {"model sha256": info["recipe"].get("model_sha256"),
                                                       "model": info["recipe"].get("model"),
                                                       "software version": info["recipe"].get("software_version")})
        else:
            for k, v in info["parameters"].items():
                print(f"  {k}: {v}")
        return 0
    rec = ctx.store().get(args.target)
    if args.json:
        print(json.dumps({"id": rec.id, "request": rec.image_request, "fingerprint": rec.fingerprint,
                          "owner": rec.owner.__dict__, "parent_chain": list(rec.parent_chain), "path": str(rec.path),
                          "sha256": rec.sha256, "created": rec.created.isoformat()}, indent=2, sort_keys=True))
        return 0
    print(f"image {rec.id}  ({rec.kind}, {rec.status}, {rec.created:%Y-%m-%d %H:%M} UTC, "
          f"by {rec.owner.display_name or rec.owner.user_id} via {rec.owner.source})")
    _print_request(rec.image_request, {"file": rec.path, "sha256": rec.sha256,
                                       "parents": " <- ".join(rec.parent_chain) or None,
                                       **{f"fingerprint {k}": v for k, v in rec.fingerprint.items()}})
    return 0


def _print_request(d: dict[str, Any], extra: dict[str, Any]) -> None:
    from core.hires import text as hires_text
    from core.request import lora_text, variation_text

    shown = {k: v for k, v in d.items() if k not in ("variation_seed", "variation_strength", "variation_chain",
                                                     "hires")}
    shown["variations"] = variation_text(d)  # the whole chain, oldest first
    shown["loras"] = lora_text(d.get("loras"))  # name, weight and file sha256 of each
    shown["prompt_syntax"] = d.get("prompt_syntax") or "plain"
    shown["hires fix"] = hires_text(d.get("hires"))  # then the second pass, in words
    for k, v in {**shown, **extra}.items():
        if v is not None and v != "":
            print(f"  {k}: {v}")


def cmd_history(args: argparse.Namespace, ctx: Any) -> int:
    if args.status != "done":
        from storage.store import ENDED_UNDONE

        statuses = ENDED_UNDONE if args.status == "not-done" else (args.status,)
        jobs = ctx.store().jobs(statuses, owner=args.owner, query=args.query, page=args.page, per_page=args.per_page)
        for job in jobs.items:
            prompt = job.request["prompt"].replace("\n", " ")
            print(f"{job.id}  {job.created:%Y-%m-%d %H:%M}  {job.owner.display_name or job.owner.user_id:<12.12}  "
                  f"{job.status:<11}  {prompt[:40]}  -- {(job.reason or 'no reason recorded').replace(chr(10), ' ')}")
        print(f"page {jobs.page} of {jobs.pages}, {jobs.total} {args.status} jobs", file=sys.stderr)
        return 0
    page = ctx.store().history(owner=args.owner, query=args.query, page=args.page, per_page=args.per_page,
                               include_verify=args.include_verify)
    for rec in page.items:
        prompt = rec.request["prompt"].replace("\n", " ")
        print(f"{rec.id}  {rec.created:%Y-%m-%d %H:%M}  {rec.owner.display_name or rec.owner.user_id:<12.12}  "
              f"seed {rec.seed:<10}  {prompt[:60]}")
    print(f"page {page.page} of {page.pages}, {page.total} images", file=sys.stderr)
    return 0
