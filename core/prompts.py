"""Prompt weights and long prompts: AUTOMATIC1111's emphasis syntax, embedded with compel.

    a (red:1.3) cat        "red" weighs 1.3
    a (red) cat            1.1 (nested brackets multiply: ((red)) is 1.21)
    a [red] cat            1/1.1
    a red cat BREAK on a blue background    a new text-encoder chunk starts at BREAK
    \\( \\) \\[ \\]              literal brackets

Parsing is ours: compel (pinned in pyproject.toml) has its own syntax ("red++", "(red)1.3")
and no A1111 parser, and no maintained library parses A1111's. The parser is small and
written from the syntax as A1111 documents it. Embedding is compel's: it weights each token's
embedding and, with `truncate_long_prompts=False`, encodes a prompt longer than the text
encoder's window in window-sized chunks (each with its own start and end tokens, split at a
comma where one is near) and joins them, as A1111 does, instead of cutting it. compel's
weighting formula is its own (it scales a token's difference from the empty prompt's
embedding, and masks down-weighted tokens), so the same weights look alike in A1111 but are
not numerically A1111's.

A prompt with no weights, no BREAK and no more tokens than the window is encoded by the
pipeline's own `encode_prompt`, exactly as before this module existed, so every older image
reproduces bit for bit. Recipes made before it carry `prompt_syntax = "plain"`: their words are
read as written and cut at the window, as they were then; a cut prompt says so in the result.
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported where it is used: core.request reads this module without it
    import torch

SYNTAXES = ("a1111", "plain")
DEFAULT_SYNTAX = "a1111"
WEIGHT_MAX = 3.0  # an emphasis weight beyond this only breaks the picture
ROUND_UP = 1.1  # what (word) multiplies by, and [word] divides by (A1111's factors)

_TOKEN = re.compile(r"\\[()\[\]\\]|\(|\)|\[|\]|:\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*\)|[^\\()\[\]:]+|:|\\", re.S)
_BREAK = re.compile(r"\s*\bBREAK\b\s*")


@dataclasses.dataclass(frozen=True)
class Parsed:
    """A prompt read with the syntax: chunks split at BREAK, each a list of (text, weight)."""

    segments: tuple[tuple[tuple[str, float], ...], ...]

    @property
    def weighted(self) -> bool:
        return len(self.segments) > 1 or any(w != 1.0 for seg in self.segments for _, w in seg)

    @property
    def text(self) -> str:
        """The words without the syntax (what a plain encoder reads)."""
        return " ".join("".join(t for t, _ in seg) for seg in self.segments)

    def weights(self) -> list[float]:
        return [w for seg in self.segments for _, w in seg]


def parse(prompt: str) -> Parsed:
    """Read A1111's emphasis syntax. Unmatched brackets apply to the end of the prompt, as in
    A1111; an explicit weight on a square bracket or a lone colon is read as text."""
    pieces: list[list[Any]] = []  # [text, weight]; weight None marks a BREAK
    round_open: list[int] = []
    square_open: list[int] = []

    def scale(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            if piece[1] is not None:
                piece[1] *= factor

    for m in _TOKEN.finditer(prompt):
        tok, weight = m.group(0), m.group(1)
        if len(tok) == 2 and tok[0] == "\\":
            pieces.append([tok[1], 1.0])
        elif tok == "(":
            round_open.append(len(pieces))
        elif tok == "[":
            square_open.append(len(pieces))
        elif weight is not None and round_open:
            scale(round_open.pop(), float(weight))
        elif tok == ")" and round_open:
            scale(round_open.pop(), ROUND_UP)
        elif tok == "]" and square_open:
            scale(square_open.pop(), 1 / ROUND_UP)
        else:
            for i, part in enumerate(_BREAK.split(tok)):
                if i:
                    pieces.append(["", None])
                if part:
                    pieces.append([part, 1.0])
    for start in round_open:
        scale(start, ROUND_UP)
    for start in square_open:
        scale(start, 1 / ROUND_UP)

    segments: list[list[tuple[str, float]]] = [[]]
    for text, weight in pieces:
        if weight is None:
            segments.append([])
        elif segments[-1] and segments[-1][-1][1] == weight:  # join runs of one weight
            segments[-1][-1] = (segments[-1][-1][0] + text, weight)
        else:
            segments[-1].append((text, weight))
    cleaned = tuple(tuple(seg) for seg in segments if seg)
    return Parsed(cleaned or ((("", 1.0),),))


def check(prompt: str) -> str | None:
    """What is wrong with a prompt's weights, as the end of a FieldError sentence; None when fine."""
    for w in parse(prompt).weights():
        if not math.isfinite(w) or not 0 <= w <= WEIGHT_MAX:
            return f"use emphasis weights from 0 to {WEIGHT_MAX:g}, as in (word:1.3); it has {w:g}"
    return None


def result_notes(fingerprint: dict[str, Any]) -> list[str]:
    """The sentences every front-end shows with a result about its prompts: a prompt that was
    cut, with how many tokens were used. [] when nothing was cut."""
    return [str(fingerprint[k]) for k in ("prompt_cut", "negative_prompt_cut") if fingerprint.get(k)]


class PromptEncoder:
    """Encodes one request's prompt and negative prompt for one loaded model."""

    def __init__(self, model):
        self.model = model
        self.pipeline = model.pipeline
        self._compel = None
        self.lock = threading.RLock()  # tokenizers are not safe to share between threads

    @property
    def window(self) -> int:
        """Tokens the text encoder reads at once, start and end tokens included."""
        return int(self.pipeline.tokenizer.model_max_length)

    def count(self, text: str) -> int:
        """Tokens of `text`, without the start and end tokens."""
        with self.lock:
            return len(self.pipeline.tokenizer(text, truncation=False, add_special_tokens=False).input_ids)

    def tokens(self, text: str, syntax: str) -> int:
        if syntax == "a1111":
            parsed = parse(text)
            return sum(self.count(t) for seg in parsed.segments for t, _ in seg)
        return self.count(text)

    def notes(self, request) -> dict[str, str]:
        """What the result should say about the prompts' encoding: a prompt cut at the window
        (plain syntax only: A1111 syntax is encoded whole), and how many chunks a long one took."""
        out: dict[str, str] = {}
        room = self.window - 2
        for field in ("prompt", "negative_prompt"):
            text = getattr(request, field)
            if not text:
                continue
            n = self.tokens(text, request.prompt_syntax)
            label = field.replace("_", " ")
            if request.prompt_syntax == "plain" and n > room:
                out[f"{field}_cut"] = (f"The {label} was cut: the text encoder used {room} of its {n} tokens "
                                       "(prompt syntax 'plain', as images made before prompt weights, reads "
                                       "the words as written and cuts them at the window).")
            elif request.prompt_syntax == "a1111" and self.needs_compel(request):
                chunks = self.chunks(text)
                if chunks > 1:
                    out[f"{field}_chunks"] = f"{n} tokens in {chunks} chunks of up to {room}"
        return out

    def chunks(self, text: str) -> int:
        """How many text-encoder windows compel splits `text` into (tokenizer only, no encoder)."""
        with self.lock:
            provider = self._get_compel().conditioning_provider
            providers = getattr(provider, "embedding_providers", None) or [provider]  # SDXL: one per encoder
            total = 0
            for seg in parse(text).segments:
                ids, _, _ = providers[0].get_token_ids_and_expand_weights(
                    [t for t, _ in seg] or [""], [w for _, w in seg] or [1.0], device="cpu")
                total += max(1, len(ids) // self.window)
            return total

    def needs_compel(self, request) -> bool:
        """False when the pipeline's own encoder gives the same thing (no weights, no BREAK, fits)."""
        if request.prompt_syntax != "a1111":
            return False
        room = self.window - 2
        for text in (request.prompt, request.negative_prompt):
            parsed = parse(text)
            if parsed.weighted or parsed.text != text or self.count(text) > room:
                return True
        return False

    def _get_compel(self):
        with self.lock:  # made once, by whichever thread needs it first
            return self._make_compel()

    def _make_compel(self):
        if self._compel is None:
            from compel import Compel, ReturnedEmbeddingsType
            from compel.embeddings_provider import SplitLongTextMode

            p = self.pipeline
            common = dict(truncate_long_prompts=False, split_long_text_mode=SplitLongTextMode.PHRASES,
                          device=self.model.device)
            if self.model.kind == "sdxl":
                self._compel = Compel(
                    tokenizer=[p.tokenizer, p.tokenizer_2], text_encoder=[p.text_encoder, p.text_encoder_2],
                    returned_embeddings_type=ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED,
                    requires_pooled=[False, True], **common)
            else:
                self._compel = Compel(tokenizer=p.tokenizer, text_encoder=p.text_encoder, **common)
        return self._compel

    def _embed(self, text: str):
        """One prompt's embeddings (and SDXL's pooled one): each BREAK segment in its own chunks."""
        compel = self._get_compel()
        provider = compel.conditioning_provider
        import torch

        parts, pooled = [], None
        for seg in parse(text).segments:
            fragments = [t for t, _ in seg] or [""]
            weights = [w for _, w in seg] or [1.0]
            parts.append(provider.get_embeddings_for_weighted_prompt_fragments(
                text_batch=[fragments], fragment_weights_batch=[weights], should_return_tokens=False,
                device=self.model.device))
            if self.model.kind == "sdxl" and pooled is None:  # SDXL's pooled text: the first chunk's
                pooled = provider.get_pooled_embeddings(texts=["".join(fragments)], device=self.model.device)
        return torch.cat(parts, dim=1), pooled

    def _same_length(self, *embeds):
        """Pad each to the longest with empty-prompt chunks (A1111 does the same). compel has this for
        one text encoder only (pad_conditioning_tensors_to_same_length fails on SDXL's two)."""
        import torch

        longest = max(e.shape[1] for e in embeds)
        if all(e.shape[1] == longest for e in embeds):
            return embeds
        empty = self._embed("")[0]
        return tuple(torch.cat([e, *[empty] * ((longest - e.shape[1]) // empty.shape[1])], dim=1) for e in embeds)

    def encode(self, request, guided: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(embeddings, SDXL's pooled embeddings or None) with compel, negative rows first when
        guided. The prompt and negative are brought to one length with empty-prompt chunks."""
        import torch

        with self.lock, torch.no_grad():
            dtype = self.model.dtype
            pe, pooled = self._embed(request.prompt)
            if not guided:
                return pe.to(dtype), (pooled.to(dtype) if pooled is not None else None)
            if self.model.kind == "sdxl" and not request.negative_prompt and getattr(
                    self.pipeline.config, "force_zeros_for_empty_prompt", False):
                ne, neg_pooled = torch.zeros_like(pe), torch.zeros_like(pooled)
            else:
                ne, neg_pooled = self._embed(request.negative_prompt)
            pe, ne = self._same_length(pe, ne)
            both = torch.cat([neg_pooled, pooled]).to(dtype) if pooled is not None else None
            return torch.cat([ne, pe]).to(dtype), both
