"""A small byte-level BPE tokenizer trained on the captions, saved in CLIP's format.

CLIP's format is vocab.json + merges.txt: byte-level symbols, a `</w>` suffix on the
last symbol of each word, and <|startoftext|>/<|endoftext|>. We train merges with the
`tokenizers` library and then write the vocabulary ourselves so that all 256 byte
symbols, with and without `</w>`, come first. That is what makes the promise hold: no
word is ever dropped or mapped to <|endoftext|>-as-unknown; an unseen word just costs
more tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers.pre_tokenizers import ByteLevel

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
SUFFIX = "</w>"
# CLIP's own word splitter (from openai/CLIP simple_tokenizer.py), letters/digits/other.
CLIP_PATTERN = r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def byte_symbols() -> list[str]:
    """The 256 printable stand-ins for bytes, in CLIP's order (bytes_to_unicode)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def _pipeline(model: models.Model) -> Tokenizer:
    tok = Tokenizer(model)
    tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CLIP_PATTERN), behavior="removed", invert=True),
        ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.BPEDecoder(suffix=SUFFIX)
    return tok


def train_tokenizer(captions: Iterable[str], out_dir: Path, vocab_size: int = 4096, max_tokens: int = 48) -> Path:
    """Train merges on `captions`, write vocab.json, merges.txt and the CLIPTokenizer configs."""
    bpe = _pipeline(models.BPE(end_of_word_suffix=SUFFIX))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        initial_alphabet=ByteLevel.alphabet(),
        end_of_word_suffix=SUFFIX,
        show_progress=False,
    )
    bpe.train_from_iterator(captions, trainer)
    trained = json.loads(bpe.to_str())["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in trained["merges"]]

    # Vocabulary in CLIP's order: bytes, bytes + </w>, merge results, then the two specials.
    symbols = byte_symbols()
    vocab: dict[str, int] = {}
    for s in symbols + [s + SUFFIX for s in symbols]:
        vocab.setdefault(s, len(vocab))
    kept = []
    for m in merges:
        a, b = m.split(" ")
        if a in vocab and b in vocab:   # always true when merges are in order; guard anyway
            vocab.setdefault(a + b, len(vocab))
            kept.append(m)
    vocab[BOS] = len(vocab)
    vocab[EOS] = len(vocab)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(kept) + "\n")
    (out_dir / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}, indent=2))
    (out_dir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": max_tokens,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
        "clean_up_tokenization_spaces": False,
    }, indent=2))
    return out_dir


def load_tokenizer(folder: Path):
    """The tokenizer exactly as the pipeline will load it."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(folder))
