"""The command line, run as a user runs it: a subprocess of the installed entry point."""

import os
import socket
import subprocess
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def statuary(args, tmp_path, **env):
    full_env = {**os.environ, "STATUARY_DATA_DIR": str(tmp_path / "data"), "STATUARY_DEVICE": "cpu",
                "STATUARY_THREADS": "2", "HF_HUB_OFFLINE": "1", **env}
    return subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=300)


def test_generate_writes_a_png_and_says_where(tmp_path, tiny_model_dir):
    out = tmp_path / "cat.png"
    r = statuary(["--model", str(tiny_model_dir), "generate", "a cat", "--seed", "42", "--steps", "3",
                  "--out", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr
    assert str(out) in r.stdout and "seed 42" in r.stdout
    assert Image.open(out).size == (64, 64)


def test_out_may_be_a_folder_and_an_out_that_cannot_be_written_is_refused_before_the_job(tmp_path, tiny_model_dir):
    model = ["--model", str(tiny_model_dir)]
    folder = tmp_path / "pictures"
    folder.mkdir()
    r = statuary([*model, "generate", "a cat", "--steps", "1", "--count", "2", "--out", str(folder)], tmp_path)
    assert r.returncode == 0, r.stderr   # was IsADirectoryError after the job had run
    ids = [line.split("id ")[1].split()[0] for line in r.stdout.splitlines()]
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{i}.png" for i in ids)

    (tmp_path / "a-file").write_text("")
    r = statuary([*model, "generate", "a dog", "--steps", "1", "--out", str(tmp_path / "a-file" / "dog.png")], tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"out: {tmp_path / 'a-file' / 'dog.png'} cannot be written, as {tmp_path / 'a-file'} is not a folder" in r.stderr
    assert "a dog" not in statuary(["history"], tmp_path).stdout   # nothing ran


def test_generate_same_seed_same_bytes(tmp_path, tiny_model_dir):
    outs = []
    for i in range(2):
        out = tmp_path / f"x{i}.png"
        r = statuary(["--model", str(tiny_model_dir), "generate", "a dog", "--seed", "7", "--steps", "2",
                      "--out", str(out)], tmp_path)
        assert r.returncode == 0, r.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


def test_bad_input_exits_nonzero_with_the_message(tmp_path, tiny_model_dir):
    r = statuary(["--model", str(tiny_model_dir), "generate", "a cat", "--steps", "0", "--width", "500"], tmp_path)
    assert r.returncode == 2
    assert "steps: 0 is not allowed; use a whole number from 1 to 150" in r.stderr
    assert "width: 500 is not allowed" in r.stderr and "Traceback" not in r.stderr


def test_an_abbreviated_option_is_refused_not_read_as_another(tmp_path, tiny_model_dir):
    # argparse's default took `--n 2` for `--negative 2` and drew with "2" as the negative prompt.
    r = statuary(["--model", str(tiny_model_dir), "generate", "a cat", "--n", "2", "--steps", "1"], tmp_path)
    assert r.returncode == 2 and "unrecognized arguments: --n 2" in r.stderr, r.stderr
    assert not (tmp_path / "data").exists() or "a cat" not in statuary(["history"], tmp_path).stdout


def test_a_record_that_cannot_be_opened_is_one_sentence_not_a_traceback(tmp_path):
    (tmp_path / "junk.db").write_text("not a database")
    (tmp_path / "a-file").write_text("")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]   # closed again: nothing listens there
    for env, sentence in (
            ({"DATABASE_URL": f"sqlite:///{tmp_path / 'junk.db'}"},
             f"The SQLite database {tmp_path / 'junk.db'} cannot be opened (file is not a database); set DATABASE_URL"),
            ({"STATUARY_DATA_DIR": str(tmp_path / "a-file" / "data")},
             "cannot be created (Not a directory); set STATUARY_DATA_DIR to a folder this user can write."),
            ({"DATABASE_URL": f"postgresql+psycopg://u:hunter2@127.0.0.1:{port}/pictures"},
             f"The PostgreSQL database pictures at 127.0.0.1:{port} cannot be reached (")):
        r = statuary(["history"], tmp_path, **env)
        assert r.returncode == 2 and sentence in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and "hunter2" not in r.stderr and len(r.stderr) < 400, r.stderr


def test_missing_model_is_a_clear_message(tmp_path):
    r = statuary(["--model", str(tmp_path / "nothing"), "generate", "a cat"], tmp_path)
    assert r.returncode == 2 and "not found" in r.stderr and "Traceback" not in r.stderr


def test_bad_setting_is_a_clear_message(tmp_path):
    r = statuary(["generate", "a cat"], tmp_path, STATUARY_PORT="eighty")
    assert r.returncode == 2 and "STATUARY_PORT='eighty' is not a whole number" in r.stderr


def test_status_json_without_a_broker_is_still_json(tmp_path):
    import json

    r = statuary(["status", "--json"], tmp_path)   # was a plain sentence, which a script's json.loads fails on
    assert r.returncode == 0 and json.loads(r.stdout)["broker"] is None, r.stdout


def test_train_forwards_its_own_options(tmp_path):
    r = statuary(["train", "--help"], tmp_path)
    assert r.returncode == 0 and "--smoke" in r.stdout and "--minutes" in r.stdout


def test_hub_id_loads_from_the_local_hugging_face_cache_offline(tmp_path, tiny_model_dir):
    """The hub-id path, as a machine that downloaded the model earlier and is now offline."""
    import shutil

    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--statuary-test--tiny-sd"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    out = tmp_path / "hub.png"
    r = statuary(["--model", "statuary-test/tiny-sd", "generate", "a cat", "--seed", "3", "--steps", "2",
                  "--out", str(out)], tmp_path, HF_HUB_CACHE=str(tmp_path / "hub"))
    assert r.returncode == 0, r.stderr
    assert Image.open(out).size == (64, 64)
    info = statuary(["info", str(out)], tmp_path)
    assert "tiny-sd" in info.stdout

    import pickle

    weights = next((repo / "snapshots" / revision / "unet").glob("*.safetensors"))
    weights.write_bytes(pickle.dumps({"not": "weights"}))  # a tampered cache
    tampered = statuary(["--model", "statuary-test/tiny-sd", "generate", "a cat", "--steps", "2"], tmp_path,
                        HF_HUB_CACHE=str(tmp_path / "hub"))
    assert tampered.returncode == 2 and "is not a safetensors file" in tampered.stderr

    missing = statuary(["--model", "statuary-test/not-there", "generate", "a cat"], tmp_path,
                       HF_HUB_CACHE=str(tmp_path / "hub"))
    assert missing.returncode == 2 and "Could not load hub model 'statuary-test/not-there'" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_a_16_bit_init_image_is_scaled_not_whitened_and_a_float_one_is_refused(tmp_path, tiny_model_dir):
    import numpy as np

    ramp = (np.linspace(0, 65535, 64 * 64).reshape(64, 64)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")  # 16-bit greyscale: Pillow's mode I;16
    Image.fromarray(np.round(ramp / 257).astype(np.uint8)).save(tmp_path / "flat.png")  # the same, 8-bit
    outs = []
    for name in ("deep", "flat"):
        out = tmp_path / f"out-{name}.png"
        r = statuary(["--model", str(tiny_model_dir), "generate", "a ramp", "--seed", "5", "--steps", "2",
                      "--init-image", str(tmp_path / f"{name}.png"), "--strength", "0.3", "--out", str(out)], tmp_path)
        assert r.returncode == 0, r.stderr
        outs.append(np.asarray(Image.open(out).convert("RGB"), dtype=np.int16))
    assert np.abs(outs[0] - outs[1]).max() == 0  # the 16-bit picture was read as the 8-bit one

    Image.fromarray(ramp.astype(np.float32) / 65535).save(tmp_path / "float.tif")
    r = statuary(["--model", str(tiny_model_dir), "generate", "a ramp", "--init-image", str(tmp_path / "float.tif")],
                 tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "init-image: 'a 32-bit float (F) image' is not allowed; use an 8-bit or 16-bit RGB, RGBA or greyscale" \
           in r.stderr  # called by its flag, --init-image


def test_every_command_records_one_owner_and_says_what_is_wrong_in_request_words(tmp_path, tiny_model_dir):
    env = {"USER": "alice", "LOGNAME": "alice-login"}  # two names for one person
    model = ["--model", str(tiny_model_dir)]
    r = statuary([*model, "generate", "a kite", "--seed", "4", "--steps", "2"], tmp_path, **env)
    assert r.returncode == 0, r.stderr
    iid = r.stdout.split("id ")[1].split()[0]
    r = statuary([*model, "reproduce", iid], tmp_path, **env)
    assert r.returncode == 0, r.stderr
    mine = statuary(["history", "--owner", "cli:alice-login"], tmp_path, **env)
    assert mine.stdout.count("a kite") == 2 and "2 images" in mine.stderr

    r = statuary([*model, "vary", iid, "--strength", "5"], tmp_path, **env)  # the flag's name, not the field's
    assert r.returncode == 2 and "strength: 5.0 is not allowed; use a finite number from 0 to 1." in r.stderr
    assert "variation_strength" not in r.stderr
    for args, sentence in ((["generate", "a kite", "--steps", "1e6"],
                            "steps: '1e6' is not allowed; use a whole number from 1 to 150."),
                           (["generate", "a kite", "--width", "abc"], "width: 'abc' is not allowed; use a multiple of 8"),
                           (["vary", iid, "--strength", "lots"], "strength: 'lots' is not allowed; use a finite number"),
                           (["history", "--page", "1180591620717411303424"],
                            "page: 1180591620717411303424 is not allowed; use a whole number from 1 to 1000000."),
                           (["info", "k" * 300], "'kkkkkkkkkkkkkkkkkkk… (300 characters)' is not an image id"),
                           (["reproduce", "k" * 300], "(300 characters)' is not an image id")):
        r = statuary(args, tmp_path, **env)
        assert r.returncode == 2 and sentence in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr and "usage:" not in r.stderr and len(r.stderr) < 300, r.stderr


def test_a_truncated_safetensors_file_is_a_sentence(tmp_path, tiny_model_dir):
    import shutil

    folder = tmp_path / "cut-model"
    shutil.copytree(tiny_model_dir, folder)
    weights = next((folder / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a download that stopped
    single = tmp_path / "cut.safetensors"
    shutil.copyfile(weights, single)
    for model in (folder, single):
        r = statuary(["--model", str(model), "generate", "a cat", "--steps", "2"], tmp_path)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        assert "is not a safetensors file: it is truncated" in r.stderr


def test_a_job_that_fails_for_a_reason_it_can_name_says_it_without_a_traceback(tmp_path, tiny_model_dir):
    # A decoder whose output bias is NaN: the job fails with core.jobs.JobError's sentence, and the
    # person at the terminal reads that sentence, not a traceback (the log keeps it at -v).
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "nan-decoder"
    shutil.copytree(tiny_model_dir, folder)
    weights = next((folder / "vae").glob("*.safetensors"))
    tensors = load_file(weights)
    tensors["decoder.conv_out.bias"].fill_(float("nan"))
    save_file(tensors, weights)
    r = statuary(["--model", str(folder), "generate", "a cat", "--steps", "2", "--seed", "1"], tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "the job did not finish: The picture came out as invalid numbers" in r.stderr
    r = statuary(["--model", str(folder), "history", "--status", "failed"], tmp_path)
    assert "The picture came out as invalid numbers" in r.stdout and "JobError" not in r.stdout


def test_an_unforeseen_failure_is_its_error_line_and_a_sentence_that_points_at_it(tmp_path, tiny_model_dir):
    # The terminal showed the service's whole traceback, then "the error is in the server's log"
    # (there is no server: this is it). Now the ERROR line names the error, the sentence points at it,
    # and -v shows the traceback. The fault is put in the process the way a bug would be: a
    # sitecustomize that breaks the decoder.
    faults = tmp_path / "faults"
    faults.mkdir()
    (faults / "sitecustomize.py").write_text(
        "import core.generator\n"
        "def _decode(self, traj):\n"
        "    raise RuntimeError('the decoder caught fire')\n"
        "core.generator.Generator.decode = _decode\n")
    env = {"PYTHONPATH": os.pathsep.join([str(faults), str(ROOT)])}
    r = statuary(["--model", str(tiny_model_dir), "generate", "a cat", "--steps", "2"], tmp_path, **env)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "ERROR core.service: job " in r.stderr and "(RuntimeError: the decoder caught fire)" in r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("statuary: the job did not finish: Something went wrong while making this picture; "
                           "the ERROR line above names the error")
    # ...and nothing above it speaks of a server's log either (the ERROR line quoted the web's sentence)
    assert "server's log" not in r.stderr, r.stderr
    r = statuary(["-v", "--model", str(tiny_model_dir), "generate", "a cat", "--steps", "2"], tmp_path, **env)
    assert r.returncode == 1 and "Traceback" in r.stderr and "in _decode" in r.stderr


def test_ctrl_c_during_a_job_cancels_it_in_one_sentence(tmp_path, tiny_model_dir):
    # It printed a KeyboardInterrupt traceback from inside threading.
    import signal

    env = {**os.environ, "STATUARY_DATA_DIR": str(tmp_path / "data"), "STATUARY_DEVICE": "cpu",
           "STATUARY_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    p = subprocess.Popen([sys.executable, "-m", "core.cli", "--model", str(tiny_model_dir), "generate", "a long job",
                          "--steps", "150", "--count", "4"], cwd=ROOT, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))   # as at a terminal
    lines = []
    for line in p.stderr:   # interrupt it mid-job, as a person would
        lines.append(line)
        if line.startswith("step "):
            p.send_signal(signal.SIGINT)
            break
    out, err = p.communicate(timeout=120)
    err = "".join(lines) + err
    assert p.returncode == 130 and "Traceback" not in err and out == "", err
    assert err.rstrip().endswith("statuary: stopped (Ctrl-C); a job that had not finished is recorded as cancelled.")
    r = statuary(["--model", str(tiny_model_dir), "history", "--status", "cancelled"], tmp_path)
    assert "a long job" in r.stdout and "cancelled" in r.stdout


def test_history_lists_failed_interrupted_and_cancelled_jobs_with_their_reasons(tmp_path, settings_factory):
    from core.jobs import Owner
    from core.request import GenerationRequest
    from storage import open_store

    store = open_store(settings_factory())  # the same data dir the subprocess uses
    me = Owner("cli", "ann", "ann")
    req = GenerationRequest("a stormy sea", seed=1, width=64, height=64, sampler="euler", guidance=7.0)
    for status, reason in (("failed", "OutOfMemory: the GPU ran out of memory"), ("cancelled", None),
                           ("interrupted", "the process running it stopped while it was running")):
        gid = store.job_queued(f"j-{status}", req, me, None, "generate", {"model_id": "m"})
        if status == "failed":
            store.job_failed(gid, reason, "OutOfMemory")
        elif status == "cancelled":
            store.job_cancelled(gid)
        else:
            store._finish(gid, "interrupted", reason, None)
    store.close()
    r = statuary(["history", "--status", "not-done"], tmp_path)
    assert r.returncode == 0 and "3 not-done jobs" in r.stderr, r.stderr
    assert "ran out of memory" in r.stdout and "cancelled before it finished" in r.stdout
    assert "stopped while it was running" in r.stdout and r.stdout.count("a stormy sea") == 3
    r = statuary(["history", "--status", "failed"], tmp_path)
    assert r.stdout.count("a stormy sea") == 1 and "failed" in r.stdout
    assert statuary(["history"], tmp_path).stdout == ""  # images only, as before


def test_generate_help_says_where_the_words_are_and_an_unknown_prompt_gets_one_line(tmp_path, tiny_model_dir):
    import json
    import shutil

    r = statuary(["generate", "--help"], tmp_path)
    said = " ".join(r.stdout.split())
    assert r.returncode == 0 and "statuary words" in said and "models/default/VOCABULARY.md" in said
    folder = tmp_path / "with-words"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "vocabulary.json").write_text(json.dumps({"format": 1, "subjects": ["cat"], "emoji": [
        {"label": "cat face", "names": ["cat face", "cat"]}]}))
    r = statuary(["--model", str(folder), "generate", "a lighthouse", "--seed", "1", "--steps", "2"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert [line for line in r.stderr.splitlines() if "draws emoji" in line] == [
        "statuary: This model draws emoji and knows none of the words in that prompt; try a subject from its word "
        "list (statuary words), e.g. cat."]
    r = statuary(["--model", str(folder), "generate", "two cats", "--seed", "1", "--steps", "2"], tmp_path)
    assert r.returncode == 0 and "draws emoji" not in r.stderr


def test_words_lists_the_subjects_by_group_and_finds_every_word_for_one(tmp_path, tiny_model_dir):
    import json
    import shutil

    folder = tmp_path / "with-words"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "vocabulary.json").write_text(json.dumps({"format": 1, "subjects": ["cat"], "emoji": [
        {"label": "cat face", "char": "🐱", "category": "Animals & Nature", "names": ["cat face", "cat", "kitten"]},
        {"label": "pizza", "char": "🍕", "category": "Food & Drink", "names": ["pizza"]}]}))
    r = statuary(["--model", str(folder), "words"], tmp_path)
    assert r.returncode == 0 and r.stdout.splitlines() == ["Animals & Nature (1): cat face", "Food & Drink (1): pizza"]
    assert r.stderr.startswith("2 subjects. A prompt is a subject, then a style")
    assert statuary(["--model", str(folder), "words", " "], tmp_path).stdout == r.stdout   # an empty search: all
    r = statuary(["--model", str(folder), "words", "Kit"], tmp_path)
    assert (r.returncode, r.stdout) == (0, "🐱 cat face: cat, kitten\n")
    r = statuary(["--model", str(folder), "words", "lighthouse"], tmp_path)
    assert r.returncode == 1 and r.stdout == "" and "no subject of this model has a word starting with" in r.stderr
    # A checkpoint without a word list says so; the unshipped default model says what generate says.
    r = statuary(["--model", str(tiny_model_dir), "words"], tmp_path)
    assert r.returncode == 0 and "has no word list" in r.stderr and "Traceback" not in r.stderr
    empty = tmp_path / "default"
    empty.mkdir()
    r = statuary(["--model", str(empty), "words"], tmp_path)
    assert r.returncode == 2 and "has not been trained and shipped yet" in r.stderr
