"""`text_aux`: the text encoder taught to name the caption's emoji, style, colour and place."""

from __future__ import annotations

import re
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from training import data as D
from training import model as M
from training import train as T
from training.batches import _encoder


def test_text_aux_labels_come_from_the_pool_and_the_head_resumes(pack_dir, tmp_path, capsys):
    """text_aux: the captions' encodings must name their emoji and style. The labels come with the
    pool's batches ("said_style" from the recipes drawn again, agreeing with the captions); the head
    is kept in the checkpoint, resumed from it, and its loss is logged."""
    from safetensors.torch import load_file

    from training.batches import PoolBatches

    run_dir = tmp_path / "run"
    args = ["--smoke", "--data", str(pack_dir), "--run", str(run_dir), "--set", "pool=96", "--set", "unet_px=16",
            "--set", "text_aux=0.5", "--set", "unet_steps=12"]
    assert T.main(args + ["--stop-at", "6"]) == 0
    assert "text aux: weight 0.5, head new" in capsys.readouterr().err
    head = {k for k in load_file(str(run_dir / "unet.safetensors")) if k.startswith("aux.")}
    assert head == {"aux.emoji", "aux.style"}
    # the background colour's head, turned on mid-run: the emoji and style heads resume, it starts new
    assert T.main(args + ["--set", "text_aux_colour=1", "--stop-at", "9"]) == 0
    log = capsys.readouterr().err
    assert "text aux: weight 0.5, background colour 1, head resumed (colour new)" in log
    head = {k for k in load_file(str(run_dir / "unet.safetensors")) if k.startswith("aux.")}
    assert head == {"aux.emoji", "aux.style", "aux.colour"}
    assert T.main(args) == 0     # the setting is remembered by the run folder
    log = capsys.readouterr().err
    assert "background colour 1, head resumed\n" in log + "\n" and "colour new" not in log
    assert re.search(r"unet step 12/12 loss [0-9.]+ text aux [0-9.]+ ", log)

    cfg = T.Config.smoke()
    cfg.pool, cfg.unet_px, cfg.text_aux = 96, 16, 0.5
    run = T.Run(cfg, pack_dir, run_dir, "cpu", write_config=False)
    tok = run.tokenizer()
    pool = run.latent_pool(run.frozen_vae(), tok, float("inf"))
    style_words = {w.replace(" ", "") for ws in D.STYLE_WORDS.values() for w in ws}
    caps = [c.replace(" ", "") for c in tok.batch_decode(pool["ids"].long(), skip_special_tokens=True)]
    said = [any(part in style_words for part in c.split(",")[1:]) for c in caps]
    assert said == pool["said_style"].tolist() and 0 < sum(said) < len(said)
    # the colour a caption names is the picture's background colour, and "said_colour" says when it names one
    named_colour = [next((k for k, c in enumerate(D.COLOUR_NAMES) if f"{c}background" in cap), -1) for cap in caps]
    assert [k >= 0 for k in named_colour] == pool["said_colour"].tolist() and 0 < sum(pool["said_colour"]) < len(caps)
    assert all(k == int(c) for k, c in zip(named_colour, pool["colour"]) if k >= 0)
    # and the place it names ("in the top left") is the recipe's, -1 when it names none
    named_place = [max((k for k, p in enumerate(D.POSITION_NAMES) if p.replace(" ", "") in cap), default=-1,
                       key=lambda k: len(D.POSITION_NAMES[k])) for cap in caps]
    assert named_place == pool["place"].tolist() and 0 < sum(k >= 0 for k in named_place) < len(caps)
    z, ids, labels = PoolBatches(pool, cfg, tok, "cpu").get(3, None, 1.0)
    empty = _encoder(tok)([""])[0]
    named = torch.tensor([not torch.equal(row, empty) for row in ids])
    assert torch.equal(labels["named"], named) and not labels["said_style"][~named].any()
    assert not labels["said_colour"][~named].any() and (labels["place"][~named] == -1).all()
    for k in range(len(z)):      # each row's labels are its picture's
        i = next(i for i in range(len(pool["latents"])) if torch.equal(pool["latents"][i].float(), z[k]))
        assert torch.equal(labels["emoji"][k], pool["emoji"][i].long()) and labels["style"][k] == pool["style"][i]
        assert labels["colour"][k] == pool["colour"][i] and labels["said_colour"][k] == (pool["said_colour"][i] & named[k])
        assert labels["place"][k] == (pool["place"][i] if named[k] else -1)


def _train_aux(text, aux, ids, labels, steps: int = 60) -> float:
    """Train the text encoder and the head on the aux loss alone; the last loss."""
    opt = torch.optim.AdamW(list(text.parameters()) + list(aux.parameters()), lr=3e-3)
    for _ in range(steps):
        loss = aux.loss(text(ids)[0], labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


def _mean_cosine(text, ids) -> float:
    """The cosine between two captions' encodings averaged over positions (what the head reads)."""
    with torch.no_grad():
        m = text(ids)[0].mean(1)
    return F.cosine_similarity(m[0], m[1], dim=0).item()


def test_joined_colour_words_the_captions_otherwise_and_keeps_the_pictures(pack_dir, smoke_run, tmp_path, capsys):
    """joined_colour: some captions join the background to the subject without a comma ("a cat on a
    blue background, flat", as people type it). The pictures and every other word are drawn as
    before, so a latent pool made without it keeps its latents and has only its captions drawn
    again; a pool whose recipes are not its own (another pack) is refused, not mislabelled."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(smoke_run / "run", tmp_path / "run", ignore=shutil.ignore_patterns("pool-*", "unet*"))
    cfg = T.Config.smoke()
    cfg.pool, cfg.unet_px, cfg.text_aux = 96, 16, 1.0     # text_aux: the pool carries its labels
    run = T.Run(cfg, pack_dir, tmp_path / "run", "cpu")
    plain = run.pool_sampler().train_batch(7, 64)
    run.cfg.joined_colour = 1.0
    joined = run.pool_sampler().train_batch(7, 64)
    for field in ("image", "scale", "centre", "angle", "background", "emoji", "style", "colour", "said_colour"):
        assert np.array_equal(getattr(plain, field), getattr(joined, field)), field
    pairs = list(zip(plain.captions, joined.captions))
    changed = [(p, j) for p, j in pairs if p != j]
    assert len(changed) == int(plain.said_colour.sum()) > 0      # every caption naming the colour, and only those
    for p, j in changed:
        colour = D.COLOUR_NAMES[joined.colour[joined.captions.index(j)]]
        phrase = f"on {'an' if colour[0] in 'aeiou' else 'a'} {colour} background"
        assert f", {phrase}" in p and f", {phrase}" not in j and f" {phrase}" in j.split(", ")[0]
        assert sorted(p.replace(f", {phrase}", "").split(", ")) == sorted(j.replace(f" {phrase}", "").split(", "))

    run.cfg.joined_colour = 0.0
    tok = run.tokenizer()
    made = run.latent_pool(run.frozen_vae(), tok, float("inf"))
    run.cfg.joined_colour = 0.5
    again = run.latent_pool(run.frozen_vae(), tok, float("inf"))
    assert "captions drawn again, 50% of those naming the background joined" in capsys.readouterr().err
    assert torch.equal(again["latents"], made["latents"]) and torch.equal(again["emoji"], made["emoji"])
    differ = (again["ids"] != made["ids"]).any(1)
    assert 0 < int(differ.sum()) < int(made["said_colour"].sum())
    run.cfg.joined_colour = 0.0                                      # without it: the stored captions, as made
    assert torch.equal(run.latent_pool(run.frozen_vae(), tok, float("inf"))["ids"], made["ids"])
    chunk = tmp_path / "run" / "pool-16" / "chunk-00000.safetensors"
    tensors = load_file(str(chunk))
    tensors["emoji"] = tensors["emoji"].roll(1, 0)
    save_file(tensors, str(chunk))
    run.cfg.joined_colour = 0.5
    with pytest.raises(SystemExit, match="captions cannot be drawn again"):
        run.latent_pool(run.frozen_vae(), tok, float("inf"))


def test_text_aux_pulls_two_subjects_apart():
    """Two captions that differ in one token start almost the same encoding; the head's loss,
    trained into the text encoder alone, makes them two."""
    from training.text_aux import TextAux

    torch.manual_seed(0)
    text = M.build_text_encoder(M.SIZES["smoke"], 40, 1, 2, 0)
    aux = TextAux(text.config.hidden_size, 2)
    ids = torch.tensor([[1, 5, 7, 9, 2, 0, 0, 0], [1, 6, 7, 9, 2, 0, 0, 0]])
    labels = {"emoji": torch.tensor([[0, -1], [1, -1]]), "style": torch.tensor([0, 2]),
              "named": torch.tensor([True, True]), "said_style": torch.tensor([True, False])}

    before, first = _mean_cosine(text, ids), aux.loss(text(ids)[0], labels).item()
    loss = _train_aux(text, aux, ids, labels)
    assert before > 0.9 and _mean_cosine(text, ids) < before - 0.3
    assert loss < first / 2
    # a pair's target is half on each emoji; an empty caption (not named) adds nothing
    pair = dict(labels, emoji=torch.tensor([[0, 1], [1, -1]]), named=torch.tensor([True, False]))
    le, _ = aux.logits(text(ids)[0])
    want = -(F.log_softmax(le[0], 0) * 0.5).sum() + F.cross_entropy(aux.logits(text(ids)[0])[1][:1], torch.tensor([0]))
    assert torch.allclose(aux.loss(text(ids)[0], pair), want, atol=1e-5)


@pytest.mark.parametrize("head", ["colour", "place"])
def test_text_aux_names_the_background_colour_and_the_place(head):
    """Two captions that differ only in their colour word (or place words) start almost the same
    encoding; with that head (text_aux_colour, text_aux_place), the aux loss makes them two.
    Without it, nothing in the loss tells them apart: it is left to the UNet's loss alone."""
    from training.text_aux import TextAux

    ids = torch.tensor([[1, 5, 7, 9, 2, 0, 0, 0], [1, 5, 7, 8, 2, 0, 0, 0]])   # the same subject, another word
    labels = {"emoji": torch.tensor([[0, -1], [0, -1]]), "style": torch.tensor([0, 0]),
              "named": torch.tensor([True, True]), "said_style": torch.tensor([False, False]),
              "colour": torch.tensor([3, 7]), "said_colour": torch.tensor([True, True]), "place": torch.tensor([0, 3])}

    def trained(weight: float) -> float:
        torch.manual_seed(0)
        text = M.build_text_encoder(M.SIZES["smoke"], 40, 1, 2, 0)
        _train_aux(text, TextAux(text.config.hidden_size, 2, **{head: weight}), ids, labels)
        return _mean_cosine(text, ids)

    plain, named = trained(0.0), trained(1.0)
    assert plain > 0.9 and named < plain - 0.3
    # a caption that does not name its colour (its place) adds no such term
    aux = TextAux(8, 2, **{head: 1.0})
    h = torch.randn(2, 8, 8)
    quiet = dict(labels, said_colour=torch.tensor([False, False]), place=torch.tensor([-1, -1]))
    assert torch.allclose(aux.loss(h, quiet), TextAux(8, 2).loss(h, quiet))
    assert aux.loss(h, labels) > aux.loss(h, quiet)
