#!/usr/bin/env bash
# The GPU path, measured on a fresh GPU machine in one go (budget: under 8 minutes):
#   1. install the project (and a CUDA torch when the machine has none) into .venv-gpu
#   2. prepare dmsc_sample and extract its features on CUDA (bf16 autocast): reviews/s
#   3. the same 500 reviews encoded on CPU in fp32: cosine of the pooled vectors against CUDA's
#   4. head_cls trained on the CUDA store scores those 500 reviews from CUDA bf16 and from CPU
#      fp32 encodings: how often the stars agree
#   5. one fine-tune epoch (20k train reviews) on CUDA: reviews/s
# and writes benchmarks/results/gpu.json.
#
#   bash benchmarks/gpu.sh             # on the GPU machine
#   bash benchmarks/gpu.sh --dry-run   # on CPU, tiny sizes, the current venv, nothing installed;
#                                      # writes $WORK/gpu.json, never the results file
# Environment: DATA (dmsc_sample.csv; default ../shared/data or ./shared/data), WORK (scratch
# folder; default /tmp/douban-gpu), PYTHON (the interpreter: makes .venv-gpu, or runs the dry run).
set -euo pipefail
cd "$(dirname "$0")/.."

DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; fi
WORK=${WORK:-/tmp/douban-gpu}
PYTHON=${PYTHON:-}
if [[ -z "${DATA:-}" ]]; then
  for candidate in ../shared/data/dmsc_sample.csv shared/data/dmsc_sample.csv; do
    if [[ -f $candidate ]]; then DATA=$candidate; break; fi
  done
fi
if [[ ! -f "${DATA:-}" ]]; then
  echo "gpu.sh: dmsc_sample.csv not found; set DATA=/path/to/dmsc_sample.csv" >&2
  exit 2
fi
mkdir -p "$WORK"
started=$(date +%s)
say() { echo "[gpu.sh $(( $(date +%s) - started ))s] $*" >&2; }

if [[ $DRY_RUN == 1 ]]; then
  say "dry run: CPU, tiny sizes, the project's .venv (or \$PYTHON)"
  if [[ -z $PYTHON && -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; fi
else
  say "installing into .venv-gpu"
  "${PYTHON:-python3}" -m venv --system-site-packages .venv-gpu  # keeps a preinstalled CUDA torch
  # shellcheck disable=SC1091
  source .venv-gpu/bin/activate
  if ! python -c "import torch, sys; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    # PyPI's Linux wheel is the CUDA build; offline, the measuring step says CUDA is missing
    pip install --quiet "torch>=2.3" || say "could not install a CUDA torch"
  fi
  # offline (no package index reachable): the project alone, on what the machine has
  pip install --quiet -e . || pip install --quiet --no-deps --no-build-isolation -e .
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 || true
  PYTHON=.venv-gpu/bin/python
fi
PYTHON_BIN=${PYTHON:-python3}

say "measuring"
DRY_RUN=$DRY_RUN WORK=$WORK DATA=$DATA "$PYTHON_BIN" - <<'PY'
import json, os, platform, shutil, time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pipeline.artifacts import write_json
from pipeline.config import load_settings
from pipeline.data.prepare import prepare_run
from pipeline.encoding.encode import encode_texts
from pipeline.encoding.load import load_encoder
from pipeline.features.extract import extract_features
from pipeline.predict.scorer import Scorer
from pipeline.workflow import finetune_run, train_run

dry = os.environ["DRY_RUN"] == "1"
work, data = Path(os.environ["WORK"]), Path(os.environ["DATA"])
device = "cpu" if dry else "cuda"
if not dry and not torch.cuda.is_available():
    raise SystemExit("gpu.sh: CUDA is not available here (use --dry-run on CPU)")
n_compare = 50 if dry else 500
finetune_reviews = 200 if dry else 20_000
t0 = time.perf_counter()

settings = load_settings(
    None,
    run_name="gpu",
    runs_dir=work / "runs",
    **{
        "features.device": device,
        "features.token_layers": [-1],
        "head.device": device,
        "head.epochs": 2 if dry else 8,
        "finetune.device": device,
        "finetune.epochs": 1,
        "finetune.train_limit": finetune_reviews,
    },
)
source = data
if dry:  # a small slice of the real file, same format
    source = work / "dmsc_dry.csv"
    pd.read_csv(data, nrows=600).to_csv(source, index=False)
prepare_run(settings, [source], progress=False)
reviews = pd.read_parquet(settings.paths.reviews, columns=["text", "split"])
shutil.rmtree(settings.paths.features, ignore_errors=True)

start = time.perf_counter()
store = extract_features(settings)
extract_s = time.perf_counter() - start

rng = np.random.default_rng(0)
rows = np.sort(rng.choice(len(reviews), size=min(n_compare, len(reviews)), replace=False))
texts = reviews["text"].iloc[rows].tolist()
cpu = encode_texts(
    load_encoder(store.encoder["name"], device="cpu"),
    texts, token_layers=[-1], max_length=store.max_length,
)
ours = store.pooled("mean", -1)[rows]
theirs = np.stack([r.pooled_mean[-1] for r in cpu])
cosine = (ours * theirs).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))

train_run(settings, ["head_cls"], progress=False)
stars = {
    d: [r["pred_star"] for r in Scorer(settings.paths, "head_cls", d).score_records(texts)]
    for d in (device, "cpu")
}
agree = float(np.mean(np.array(stars[device]) == np.array(stars["cpu"])))

start = time.perf_counter()
finetune_run(settings, evaluate=False, progress=False)
finetune_s = time.perf_counter() - start
train_n = min(finetune_reviews, int((reviews["split"] == "train").sum()))

result = {
    "dry_run": dry,
    "device": torch.cuda.get_device_name(0) if not dry else "cpu (dry run)",
    "torch": torch.__version__,
    "platform": platform.platform(),
    "reviews": len(reviews),
    "extract": {
        "seconds": round(extract_s, 2),
        "reviews_per_s": round(len(reviews) / extract_s, 1),
        "dtype": "bf16 autocast" if not dry else "fp32",
        "token_budget": store.manifest.get("token_budget"),
    },
    "cuda_vs_cpu_fp32": {
        "reviews": len(rows),
        "cosine_mean": round(float(cosine.mean()), 5),
        "cosine_min": round(float(cosine.min()), 5),
        "head_cls_star_agreement": round(agree, 4),
    },
    "finetune_epoch": {
        "train_reviews": train_n,
        "seconds_incl_load": round(finetune_s, 2),
        "reviews_per_s": round(train_n / finetune_s, 1),
    },
    "total_seconds": round(time.perf_counter() - t0, 1),
}
out = work / "gpu.json" if dry else Path("benchmarks/results/gpu.json")
out.parent.mkdir(parents=True, exist_ok=True)
write_json(out, result)
print(json.dumps(result, indent=2))
print(f"wrote {out}", flush=True)
PY
say "done"
