#!/usr/bin/env bash
# Train the default model on the lent GPU machine in ONE `run` call, then ship it from here.
#
# A task that draws a GPU gets 15 minutes of device time in all, the machine's start (a minute or
# two) included, and a command runs 10 minutes at most; under 4 minutes left, no machine starts. So
# there is one try: one call that trains the whole model (`Config.gpu()`: the CPU recipe's 64 px
# model with a GPU's batches), each phase's schedule fitted to the time left from its first steps'
# speed (`--fit`), exports it and sends it back. The evaluation runs here afterwards, on the CPU,
# through `training.ship` (its judge is cached here already), so no device time goes to it.
#
# Here (this machine reaches the package registries; the device machine reaches nothing):
#   python -m training.data build --out training/build/data       # the data pack, 35 MiB (once)
#   bash training/device.sh prepare training/runs/cpu6/eval        # diffusers' wheel + the cached judge
# Then, if `status` says can_start_another, the one call (timeout_s 600):
#   run(carry=["training/build/data", "training/build/device"], command="bash training/device.sh train")
# Then here, with the folder the reply names as files_at:
#   bash training/device.sh unpack FILES_AT /tmp/gpu-model      # the model; its log, notes and the judge in /tmp/gpu-model.run
#   python -m training.ship --model /tmp/gpu-model --eval-dir /tmp/gpu-model.run/eval ...   # evaluates; ships only if it passes
#
# `train MINUTES` (default 7.6) is the trainer's deadline: the tokenizer, the VAE (`--fit vae=VAE_MINUTES`,
# default 1.5), the latent pool and the UNet (fitted to what is left) all inside it; the export and
# packing after it take about half a minute. A dry run of the whole call on a CPU, with a toy model:
#   RUN=/tmp/dry-run OUT=/tmp/dry PYTHON=.venv/bin/python DEVICE_ARGS="--device cpu --smoke" \
#       TRAIN_ARGS="--set unet_steps=400 --set vae_steps=200" bash training/device.sh train 0.5 0.1
# (DEVICE_ARGS go to both the training and the export invocation, TRAIN_ARGS to the training alone.)
set -euo pipefail
cd "$(dirname "$0")/.."
DEV=training/build/device          # what travels: wheels/ and run/ (run/eval holds the cached judge)
RUN=${RUN:-$DEV/run}               # a dry run elsewhere names another
DATA=${DATA:-training/build/data}  # likewise
DIFFUSERS=diffusers==0.42.1        # as pinned in pyproject.toml; the device has the rest (transformers, tokenizers...)
PY=${PYTHON:-python3}             # the device's python3 holds its torch; a dry run here names .venv/bin/python
export PYTHONUNBUFFERED=1

case "${1:-}" in
  prepare)   # EVAL_DIR: a run's eval folder holding the judge (judge2-common-128px-...safetensors)
    eval_dir=${2:?usage: bash training/device.sh prepare RUN/eval}
    judge=$(ls "$eval_dir"/judge2-common-128px-*.safetensors 2>/dev/null | head -1)
    [ -n "$judge" ] || { echo "no cached 128 px judge in $eval_dir (python -m training.evaluate --judge-only ...)" >&2; exit 2; }
    [ -f "$DATA/meta.json" ] || { echo "no data pack: python -m training.data build --out $DATA" >&2; exit 2; }
    if [ -e "$RUN/unet.safetensors" ] || [ -e "$RUN/vae.safetensors" ]; then
      echo "$RUN holds a run already; move it away first" >&2; exit 2
    fi
    mkdir -p "$DEV/wheels" "$RUN/eval"
    "${PYTHON:-.venv/bin/python}" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d "$DEV/wheels" "$DIFFUSERS"
    cp "$judge" "$RUN/eval/"
    du -sh "$DATA" "$DEV"
    echo "carry: training/build/data and $DEV (the 64 MiB a call holds them and the working tree)"
    ;;
  train)     # [MINUTES] [VAE_MINUTES]: on the device machine
    minutes=${2:-7.6}; vae_minutes=${3:-1.5}
    OUT=${OUT:?OUT is the folder the device sends back}
    started=$(date +%s)
    log="$OUT/train.log"
    if ! "$PY" -c "import diffusers" 2>/dev/null; then
      "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site "$DEV"/wheels/*.whl
      export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    "$PY" -c "import torch, diffusers, transformers, tokenizers; print('torch', torch.__version__, 'cuda', \
torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-', '| diffusers', \
diffusers.__version__, '| transformers', transformers.__version__, '| tokenizers', tokenizers.__version__)" 2>&1 | tee "$log"
    # Everything in one invocation: tokenizer, VAE (fitted to VAE_MINUTES), pool, UNet (fitted to the deadline).
    # DEVICE_ARGS and TRAIN_ARGS are for a dry run elsewhere (see the top of this file); on the device they are empty.
    # shellcheck disable=SC2086
    "$PY" -m training.train --data "$DATA" --run "$RUN" --minutes "$minutes" \
      --fit vae="$vae_minutes" --fit unet=999 ${DEVICE_ARGS:-} ${TRAIN_ARGS:-} 2>&1 | tee -a "$log" || true
    # The checkpoint as it stands, stopped on time or not: a scratch export (only training.ship writes models/default).
    # shellcheck disable=SC2086
    "$PY" -m training.train --data "$DATA" --run "$RUN" --phase none --export "$RUN/export" \
      ${DEVICE_ARGS:-} 2>&1 | tee -a "$log" || true
    echo "device.sh train: $(( $(date +%s) - started )) s" | tee -a "$log"
    # What comes back is at most 8 files of at most 16 MiB: the model as a tar in 15 MiB parts
    # (~47 MiB: 4), the log, and the run's notes (config, grids, round trips, grid scores) in one tar.
    if [ -d "$RUN/export" ]; then
      tar -C "$RUN/export" -cf - . | split -b 15m -d - "$OUT/model.tar.part"
    fi
    tar -C "$RUN" -cf "$OUT/run-notes.tar" --exclude='*.safetensors' --exclude='export' --exclude='pool-*' \
      --exclude='eval' . 2>/dev/null || true
    ls -la "$OUT"
    ;;
  unpack)    # FILES_AT DEST: the model into DEST, the run's notes and the judge (for training.ship) into DEST.run
    from=${2:?usage: bash training/device.sh unpack FILES_AT DEST}; dest=${3:?usage: bash training/device.sh unpack FILES_AT DEST}
    ls "$from"/model.tar.part* >/dev/null 2>&1 || { echo "no model.tar.part* in $from: the call exported nothing (see train.log there)" >&2; exit 2; }
    mkdir -p "$dest" "$dest.run"
    cat "$from"/model.tar.part* | tar -xf - -C "$dest"
    [ -f "$from/run-notes.tar" ] && tar -xf "$from/run-notes.tar" -C "$dest.run"
    cp "$from/train.log" "$dest.run/" 2>/dev/null || true
    mkdir -p "$dest.run/eval" && cp "$DEV"/run/eval/judge2-*.safetensors "$dest.run/eval/" 2>/dev/null || true
    echo "model in $dest; log, config, grids and round trips in $dest.run; training.ship's --eval-dir: $dest.run/eval"
    ;;
  *)
    echo "usage: bash training/device.sh prepare RUN/eval | train [MINUTES [VAE_MINUTES]] | unpack FILES_AT DEST" >&2
    exit 2
    ;;
esac
