"""PNG recipes: A1111 text both ways, our JSON chunk, and files that were tampered with."""

from __future__ import annotations

import io
import json
import struct
import zlib

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from core.request import GenerationRequest
from storage import BadMetadata, parse_a1111, read_recipe
from storage.pngmeta import a1111_parameters, encode_png, recipe

A1111_SAMPLE = (
    "masterpiece, a cat wearing a hat, (detailed:1.2)\n"
    "with a second prompt line\n"
    "Negative prompt: lowres, bad anatomy,\nblurry\n"
    'Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 3735928559, Size: 512x768, Model hash: 6ce0161689, '
    'Model: v1-5-pruned-emaonly, Variation seed: 42, Variation seed strength: 0.3, Denoising strength: 0.55, '
    'Lora hashes: "add_detail: 7c6bad76eb54, other: 1234", Version: v1.9.4')


def _req(**kw):
    base = dict(prompt="a red cat", seed=123, width=512, height=512, sampler="dpmpp_2m_karras", guidance=7.0)   # as resolved
    base.update(kw)
    return GenerationRequest(**base)


def test_a1111_text_matches_the_format():
    d = _req(negative_prompt="blurry").to_dict()
    assert a1111_parameters(d, "f" * 64, "default") == (
        "a red cat\nNegative prompt: blurry\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 123, "
        "Size: 512x512, Model hash: ffffffffff, Model: default")
    d = _req(variation_seed=9, variation_strength=0.25, guidance=6.5, sampler="euler_a").to_dict()
    d["init_image_sha256"] = "0" * 64
    d["strength"] = 0.6
    assert a1111_parameters(d, "", "").endswith(
        "Sampler: Euler a, CFG scale: 6.5, Seed: 123, Size: 512x512, Variation seed: 9, "
        "Variation seed strength: 0.25, Denoising strength: 0.6")


def test_parse_real_a1111_text():
    p = parse_a1111(A1111_SAMPLE)
    assert p["Prompt"] == "masterpiece, a cat wearing a hat, (detailed:1.2)\nwith a second prompt line"
    assert p["Negative prompt"] == "lowres, bad anatomy,\nblurry"
    assert p["Steps"] == "30" and p["Sampler"] == "DPM++ 2M Karras" and p["CFG scale"] == "7.5"
    assert p["Seed"] == "3735928559" and p["Size"] == "512x768" and p["Model hash"] == "6ce0161689"
    assert p["Variation seed strength"] == "0.3" and p["Denoising strength"] == "0.55"
    assert p["Lora hashes"] == "add_detail: 7c6bad76eb54, other: 1234" and p["Version"] == "v1.9.4"
    assert parse_a1111("just a prompt") == {"Prompt": "just a prompt", "Negative prompt": ""}


def test_our_text_parses_back():
    d = _req(prompt="line one\nline two: with, commas", negative_prompt="no", variation_seed=5,
             variation_strength=0.5).to_dict()
    p = parse_a1111(a1111_parameters(d, "a" * 64, "my, model"))
    assert p["Prompt"] == d["prompt"] and p["Negative prompt"] == "no" and p["Model"] == "my, model"
    assert (p["Seed"], p["Variation seed"], p["Variation seed strength"]) == ("123", "5", "0.5")


def _png(parameters=None, statuary=None, image=None) -> bytes:
    info = PngInfo()
    if parameters is not None:
        info.add_text("parameters", parameters)
    if statuary is not None:
        info.add_text("statuary", statuary)
    buf = io.BytesIO()
    (image or Image.new("RGB", (8, 8))).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def _ours(**kw) -> tuple[bytes, dict, str]:
    d = _req(**kw).to_dict()
    rec = recipe(d, "b" * 64, "tiny", "0.1.0")
    text = a1111_parameters(d, "b" * 64, "tiny")
    return encode_png(Image.new("RGB", (8, 8), (1, 2, 3)), rec, text), rec, text


def test_reads_ours_and_a1111_files(tmp_path):
    data, rec, _ = _ours(prompt="snowman ☃ in a field")  # not Latin-1: stored as iTXt
    info = read_recipe(data)
    assert info["source"] == "statuary" and info["recipe"] == rec
    assert info["parameters"]["Prompt"] == "snowman ☃ in a field"
    assert encode_png(Image.new("RGB", (8, 8), (1, 2, 3)), rec, a1111_parameters(rec["request"], "b" * 64, "tiny")) == data

    path = tmp_path / "a1111.png"
    path.write_bytes(_png(parameters=A1111_SAMPLE))
    info = read_recipe(path)
    assert info["source"] == "a1111" and info["parameters"]["Seed"] == "3735928559"


def _set_chunk_text(data: bytes, key: bytes, new_text: bytes, fix_crc: bool = True) -> bytes:
    """Rewrite one tEXt chunk in place, like a hand edit with a PNG tool."""
    out, pos = bytearray(data[:8]), 8
    while pos < len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        crc = data[pos + 8 + length:pos + 12 + length]
        if ctype == b"tEXt" and body.split(b"\0", 1)[0] == key:
            body = key + b"\0" + new_text
            crc = struct.pack(">I", zlib.crc32(ctype + body) if fix_crc else 0)
        out += struct.pack(">I4s", len(body), ctype) + body + crc
        pos += 12 + length
    return bytes(out)


def test_tampered_metadata_is_refused():
    data, rec, text = _ours()
    # JSON edited to a different seed: the A1111 text beside it no longer agrees
    edited = json.dumps({**rec, "request": {**rec["request"], "seed": 124}}, sort_keys=True).encode()
    with pytest.raises(BadMetadata, match="disagree"):
        read_recipe(_set_chunk_text(data, b"statuary", edited))
    # A1111 text edited
    with pytest.raises(BadMetadata, match="disagree"):
        read_recipe(_set_chunk_text(data, b"parameters", text.replace("Seed: 123", "Seed: 999").encode()))
    # broken JSON, JSON of the wrong shape, a field no request has, a value no request allows
    for bad in (b"{not json", b"[1, 2]", json.dumps({**rec, "request": {**rec["request"], "cfg": 3}}).encode(),
                json.dumps({**rec, "request": {**rec["request"], "steps": -5}}).encode()):
        with pytest.raises(BadMetadata, match="damaged or edited"):
            read_recipe(_set_chunk_text(data, b"statuary", bad))
    # bytes changed without fixing the chunk's CRC
    with pytest.raises(BadMetadata, match="not a readable image"):
        read_recipe(_set_chunk_text(data, b"statuary", json.dumps(rec).encode(), fix_crc=False))
    with pytest.raises(BadMetadata, match="not a readable image"):
        read_recipe(b"definitely not a png")
    with pytest.raises(BadMetadata, match="no recipe"):
        read_recipe(_png())


def test_a1111_parameters_carry_lora_tags_and_hashes_and_older_recipes_keep_their_text():
    from storage.pngmeta import a1111_parameters

    base = {"prompt": "red cat", "steps": 20, "sampler": "euler", "guidance": 7.0, "seed": 1, "width": 64,
            "height": 64}
    before = a1111_parameters(base, "", "")
    assert before.splitlines()[0] == "red cat" and "Lora" not in before
    text = a1111_parameters({**base, "loras": [["pix", 0.8, "ab" * 32]]}, "", "")
    assert text.splitlines()[0] == "red cat <lora:pix:0.8>"  # where A1111 reads LoRAs from
    assert 'Lora hashes: "pix: abababababab"' in text


@pytest.mark.parametrize("side", [10_000, 20_000])   # past Pillow's warning limit (89 M pixels); past its error limit
def test_a_png_too_large_to_decode_is_a_sentence_not_a_decompression_bomb(tmp_path, side):
    """`statuary info` on a 20,000 x 20,000 PNG (49 KB on disk) was a DecompressionBombError
    traceback; at 10,000 x 10,000 it decoded 100 M pixels to read a few text chunks."""
    path = tmp_path / "huge.png"
    Image.new("1", (side, side)).save(path)
    for source in (path, path.read_bytes()):
        with pytest.raises(BadMetadata) as info:
            read_recipe(source)
        name = str(path) if source is path else "This file"
        assert str(info.value) == (f"{name} is too large a picture to read: Statuary reads pictures of at most "
                                   f"{Image.MAX_IMAGE_PIXELS:,} pixels.")
