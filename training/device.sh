#!/usr/bin/env bash
# Train the default model on the lent GPU machine, one stage per `run` call.
#
# Prepared on a machine with network (the GPU machine has none):
#   python -m training.data build --out training/build/data                  # 34 MiB pack
#   pip download -d training/build/wheels --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 \
#       diffusers==0.42.1 transformers==5.23.0 tokenizers==0.23.3 safetensors==0.8.0 huggingface_hub==2.4.0   # ~59 MiB
#
# Then, each line one `run` call (10 minutes at most each; 30 minutes of device time a
# session when this was written, 15 a task at present, starts included, so these four no
# longer fit as they stand: see the model card; carry is 64 MiB a call, so wheels and data
# travel in separate calls and stay on the warm machine):
#   run(carry=["training/build/wheels"], command="bash training/device.sh setup")
#   run(carry=["training/build/data"],   command="bash training/device.sh train 8")
#   run(command="bash training/device.sh train 8.5")          # resumes from the checkpoint
#   run(command="bash training/device.sh finish 3")           # trains 3 more minutes, exports, evaluates
# Everything worth keeping comes back under $OUT (at most 8 files of 16 MiB: see `finish`).
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-training/runs/main}
OUT=${OUT:-/tmp/statuary-out}
mkdir -p "$OUT" "$RUN"
export PYTHONUNBUFFERED=1

case "${1:-}" in
  setup)
    python -V
    python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
    pip install -q --no-index --find-links training/build/wheels \
      diffusers==0.42.1 transformers==5.23.0 tokenizers==0.23.3 safetensors==0.8.0
    python -c "import diffusers, transformers, tokenizers; print('ok', diffusers.__version__, transformers.__version__, tokenizers.__version__)"
    ;;
  train)   # MINUTES: stop and checkpoint after this long; the next call resumes
    python -m training.train --data training/build/data --run "$RUN" --minutes "${2:-8}" 2>&1 | tee -a "$OUT/train.log"
    cp "$RUN"/*.json "$OUT"/ 2>/dev/null || true
    ;;
  finish)  # MINUTES of training first (0 to skip), then export + evaluate
    if [ "${2:-0}" != "0" ]; then
      python -m training.train --data training/build/data --run "$RUN" --minutes "$2" 2>&1 | tee -a "$OUT/train.log"
    fi
    # A scratch export: only training.ship writes models/default, after its own evaluation.
    python -m training.train --data training/build/data --run "$RUN" --phase none --export "$RUN/export" 2>&1 | tee -a "$OUT/train.log"
    python -m training.evaluate --model "$RUN/export" --data training/build/data --out "$RUN/eval" 2>&1 | tee "$OUT/evaluate.log"
    # What comes back is at most 8 files of at most 16 MiB each: the model as a tar split in
    # 15 MiB parts (47 MiB -> 4), the sample grid to look at, and one small tar of the rest.
    # Here:  mkdir /tmp/m && cat model.tar.part* | tar -xf - -C /tmp/m && python -m training.ship --model /tmp/m ...
    tar -C "$RUN/export" -cf - . | split -b 15m -d - "$OUT/model.tar.part"
    cp "$RUN"/eval/samples.png "$OUT/"
    cp "$OUT/train.log" "$OUT/evaluate.log" "$RUN"/eval/metrics.json "$RUN"/eval/samples.txt "$RUN"/ 2>/dev/null || true
    tar -C "$RUN" -cf "$OUT/eval.tar" --exclude='*.safetensors' --exclude='eval/*.png' --exclude=export . 2>/dev/null || true
    rm -f "$OUT/train.log" "$OUT/evaluate.log" "$OUT"/*.json
    ls -la "$OUT"
    ;;
  *)
    echo "usage: bash training/device.sh setup | train MINUTES | finish MINUTES" >&2
    exit 2
    ;;
esac
