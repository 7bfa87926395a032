#!/usr/bin/env bash
# bench/gpu_check.sh: the GPU checks of a lent machine as one command (under 8 minutes on one H100/H200).
#
#   bash bench/gpu_check.sh               on the GPU machine (the device tool's `run`, from the repo root)
#   bash bench/gpu_check.sh --cpu-smoke   here: the same phases on the tiny test model in a few minutes
#
# Phases, each with its own time limit inside an overall budget (GPU_CHECK_BUDGET, 460 s); a failed or timed-out
# phase is reported and the later ones still run:
#   setup    install the carried wheels (.whl/*.whl) into /tmp/site, check that every module the checks import loads
#   model    build the random-init Qwen2.5-7B checkpoint (.cache/bench-models/qwen2.5-7b, ~15 GB, about a minute)
#   lora     python -m bench.train, seq 4096, tailor defaults vs trl tuned by hand (2 warmup + 4 steps); tailor's
#   qlora    micro batch is the memory planner's; each GPU row also prints the planner's estimate against
#            torch.cuda.max_memory_allocated / max_memory_reserved
#   ddp      only with more than one GPU: `python -m train` on the same rows, GPUS=N, 20 steps
# Outputs in $OUT (else ./gpu-check-out): one log per phase, bench-<method>.json, BENCHMARKS.md (the new blocks, to
# copy into the repo's file), ddp-train_metrics.json, summary.txt.
#
# What to carry (the image has torch, transformers, peft, accelerate (so psutil), numpy, pyarrow, pyyaml, but not
# trl, datasets, bitsandbytes, pydantic, wandb; pandas is not known: `setup` names every missing module; nothing
# can be downloaded there). Versions from requirements.lock, about 48 MB of wheels:
#   trl 1.16.0 (0.9 MB), datasets 5.2.0 (0.6 MB), dill 0.4.1, multiprocess 0.70.19, xxhash 4.1.0 (datasets' own
#   imports, 0.7 MB together), bitsandbytes 0.50.2 (43.1 MB), pydantic 2.14.3, pydantic-core 2.50.4,
#   annotated-types 0.8.0, typing-inspection 0.4.5 (tailor's recipe schema, 2.8 MB together).
#   Not carried: wandb 0.31.0 (20 MB, would not fit beside bitsandbytes; not imported with tracking disabled, as in
#   every run here), pandas 3.1.1 (12 MB; datasets imports it: if `setup` reports it missing, carry it instead of
#   bitsandbytes and run with GPU_CHECK_METHODS=lora).
#   The image's transformers (5.17.0 on 2026-11-17, KINDS.md) is older than the pinned 5.23.0: if `setup` reports that
#   trl or tailor refuses it, carry transformers==5.23.0 (about 12 MB) in place of datasets' extras.
# plus the Qwen2.5 tokenizer, .cache/bench-models/tokenizers/qwen2.5 (8.0 MB; the checkpoint itself is built on the
# GPU). With the 1.6 MB working tree that is about 58 MB of the 64 MiB a call carries. Once, here, in the repo root
# (bitsandbytes' wheel is tagged manylinux_2_24 only: without that --platform pip finds no match):
#
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d .whl \
#     trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 xxhash==4.1.0 bitsandbytes==0.50.2 \
#     pydantic==2.14.3 pydantic-core==2.50.4 annotated-types==0.8.0 typing-inspection==0.4.5
#   .venv/bin/python -m bench.train --tokenizers-only
#
# Then one device `run`: command `bash bench/gpu_check.sh`, timeout_s 600,
# carry [".whl", ".cache/bench-models/tokenizers/qwen2.5"].
# Environment: OUT, PYTHON (python3), GPU_CHECK_BUDGET (460), GPU_CHECK_METHODS ("lora qlora"), GPU_CHECK_MODEL
# (qwen2.5-7b), GPU_CHECK_SEQ (4096), GPU_CHECK_WORK (/tmp/tailor-gpu-check: the DDP run, kept out of $OUT).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
MODE=gpu
case "${1:-}" in
  --cpu-smoke) MODE=cpu ;;
  "") ;;
  *) sed -n '2,40p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac

OUT=${OUT:-$ROOT/gpu-check-out}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=${GPU_CHECK_WORK:-/tmp/tailor-gpu-check}
BUDGET=${GPU_CHECK_BUDGET:-460}
METHODS=${GPU_CHECK_METHODS:-lora qlora}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_DATASETS_DISABLE_PROGRESS_BARS=1
export TAILOR_CACHE=${TAILOR_CACHE:-$ROOT/.cache} PYTHONWARNINGS=${PYTHONWARNINGS:-ignore::FutureWarning}
if [[ $MODE == cpu ]]; then  # the tiny test checkpoint, short rows, 1-2 steps: the same code paths in minutes
  PY=${PYTHON:-$( [[ -x .venv/bin/python ]] && echo .venv/bin/python || echo python3 )}
  MODEL=${GPU_CHECK_MODEL:-test} SEQ=${GPU_CHECK_SEQ:-64} WARMUP=0 STEPS=1 DDP_STEPS=2
else
  PY=${PYTHON:-python3}
  MODEL=${GPU_CHECK_MODEL:-qwen2.5-7b} SEQ=${GPU_CHECK_SEQ:-4096} WARMUP=2 STEPS=4 DDP_STEPS=20
fi
START=$SECONDS
FAILED=0
STATUS=()

# phase NAME LIMIT_S COMMAND...: run COMMAND (a program or an exported function) under a time limit, never past the
# overall budget, output to the terminal and $OUT/NAME.log; a failure is recorded, not fatal.
phase() {
  local name=$1 limit=$2 left rc started=$SECONDS
  shift 2
  left=$((BUDGET - (SECONDS - START)))
  ((limit > left)) && limit=$left
  if ((limit < 15)); then
    STATUS+=("$name: SKIPPED (overall budget of ${BUDGET}s spent)"); FAILED=1; return 0
  fi
  echo "=== $name (limit ${limit}s) $(date +%T)"
  set +e
  timeout --kill-after=15 "$limit" bash -c 'set -euo pipefail; "$@"' _ "$@" 2>&1 | tee "$OUT/$name.log"
  rc=${PIPESTATUS[0]}
  set -e
  if ((rc == 0)); then
    STATUS+=("$name: ok ($((SECONDS - started)) s)")
  else
    ((rc == 124 || rc == 137)) && STATUS+=("$name: TIMEOUT after ${limit}s") \
      || STATUS+=("$name: FAILED, exit $rc ($((SECONDS - started)) s; see $name.log)")
    FAILED=1
  fi
}

install_wheels() {
  if compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --upgrade --no-cache-dir --target /tmp/site .whl/*.whl
    echo "installed $(ls .whl/*.whl | wc -l) wheels into /tmp/site"
  else
    echo "no .whl/ folder: using the installed packages"
  fi
  "$PY" - <<'EOF'
import importlib, importlib.metadata as md, platform, sys
need = ["torch", "transformers", "peft", "accelerate", "trl", "datasets", "bitsandbytes", "pydantic", "yaml",
        "pyarrow", "pandas", "numpy", "xxhash", "dill", "multiprocess", "psutil", "safetensors", "tokenizers"]
missing = []
for name in need:
    try:
        module = importlib.import_module(name)
        print(f"  {name:14} {getattr(module, '__version__', '?')}")
    except Exception as err:  # noqa: BLE001 - report every broken import, not only the first
        missing.append(name)
        print(f"  {name:14} MISSING: {type(err).__name__}: {str(err)[:120]}")
import torch
from tailor.precision import resolve_precision
print(f"python {platform.python_version()}; {torch.cuda.device_count()} GPU(s): "
      + ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())))
print(resolve_precision("auto").line())
sys.exit(f"missing modules: {', '.join(missing)}" if missing else 0)
EOF
}

ddp_run() {  # ddp_run GPUS: write the run of the bench rows, then `python -m train` on GPUS processes
  rm -rf "$WORK/ddp"
  "$PY" -m bench.train --model "$MODEL" --seq "$SEQ" --warmup 0 --steps "$DDP_STEPS" --train-run "$WORK/ddp"
  local args
  read -ra args < "$WORK/ddp/train-args.txt"
  "$PY" -m train "${args[@]}" --gpus "$1"
  cp "$WORK/ddp/runs/bench-train/adapter/train_metrics.json" "$OUT/ddp-train_metrics.json"
}

summary() {
  echo "gpu check ($MODE): model $MODEL, seq $SEQ, $(($SECONDS - START)) s"
  printf '  %s\n' "${STATUS[@]}"
  for method in $METHODS; do
    [[ -f $OUT/$method.log ]] && grep -E "^($method) |^ +memory plan|ratio tokens/s" "$OUT/$method.log" || true
  done
  "$PY" - "$OUT" <<'EOF' || true
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
metrics = out / "ddp-train_metrics.json"
if not metrics.is_file():
    sys.exit(0)
ddp = json.loads(metrics.read_text())
line = f"ddp: {ddp['world_size']} processes, {ddp['steps']} steps, {ddp['tokens_per_second']} tokens/s (whole run)"
bench = out / "bench-lora.json"
single = [r for r in json.loads(bench.read_text())["results"] if r["side"] == "tailor" and "error" not in r] \
    if bench.is_file() else []
if single and ddp.get("tokens_per_second"):
    base = single[0]["tokens_per_second"]
    line += (f"; scaling {ddp['tokens_per_second'] / (ddp['world_size'] * base):.0%} of {ddp['world_size']} x "
             f"the single-device tailor LoRA row ({base:,.0f} tokens/s; the DDP figure includes its first steps)")
print(line)
EOF
}

echo "gpu check ($MODE) in $ROOT -> $OUT"
export PYTHONPATH=/tmp/site:$ROOT${PYTHONPATH:+:$PYTHONPATH}
export OUT WORK PY MODEL SEQ DDP_STEPS
export -f install_wheels ddp_run
phase setup 90 install_wheels
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv \
  | tee "$OUT/nvidia-smi.txt" || true
GPUS=$("$PY" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
if [[ $MODE == gpu && $GPUS == 0 ]]; then
  STATUS+=("no GPU visible: the GPU phases did not run (bash bench/gpu_check.sh --cpu-smoke checks the code here)")
  FAILED=1
else
  phase model 150 "$PY" -c "from bench.train import ensure_bench_model; print(ensure_bench_model('$MODEL'))"
  for method in $METHODS; do
    phase "$method" 200 "$PY" -m bench.train --model "$MODEL" --seq "$SEQ" --methods "$method" \
      --sides tailor trl-tuned --warmup "$WARMUP" --steps "$STEPS" --json "$OUT/bench-$method.json" \
      --benchmarks "$OUT/BENCHMARKS.md"
  done
  if ((GPUS > 1)) || [[ $MODE == cpu ]]; then
    phase ddp 200 ddp_run "$(( GPUS > 1 ? GPUS : 1 ))"
  else
    STATUS+=("ddp: skipped (1 GPU)")
  fi
fi
summary | tee "$OUT/summary.txt"
exit "$FAILED"
