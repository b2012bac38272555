#!/usr/bin/env bash
# The GPU checks of the speed and sp-padding work, on one 2-GPU machine, in under 9 minutes.
# Every stage writes JSON (and a log) under $OUT; summary.json says what ran, how long, and
# what was skipped for lack of time. A failing stage does not stop the others.
#
#   BENCH=DIR OUT=DIR bash tools/gpu_check.sh
#   STAGES=exact_sp,fast_cfg,fast_dp BENCH=DIR OUT=DIR bash tools/gpu_check.sh   # some stages only
#
# BENCH: a folder in the official format (worldmodelbench.json + images/) holding at least
#   4 instances of output size 1248x704 and AYcHbDVOnWQ_13_69to196 (1312x672, 18,081 tokens):
#     python -m bench.throughput --copy-from BENCHMARK --size 1248x704,1312x672 \
#         --instances 4 --copy-only --bench-root DIR
#   Without BENCH a synthetic benchmark stands in (summary.json says so).
# Needs: torch with CUDA, the wheels of wan22 (--no-deps), diffusers, ftfy, wcwidth,
#   easydict, submitit, imageio-ffmpeg; optional fa3-fwd (flash3).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/wmsub_gpu_check}
WORK=${WORK:-/tmp/wmsub_gpu_work}
PY=${PYTHON:-python}
BUDGET_S=${BUDGET_S:-530}   # stop starting stages after this; the last one is cut at it
STEPS=${STEPS:-6}           # denoising steps per video in the throughput runs (JSON scales to 50)
CKPT=$WORK/ckpt
mkdir -p "$OUT" "$WORK"
T0=$(date +%s)
echo '{}' > "$OUT/summary.json"

note() {  # note KEY JSON-VALUE: merge one entry into summary.json
  "$PY" - "$OUT/summary.json" "$1" "$2" <<'EOF'
import json, sys
path, key, value = sys.argv[1:]
data = json.load(open(path))
data[key] = json.loads(value)
json.dump(data, open(path, "w"), indent=1)
EOF
}

wants() {  # wants NAME: NAME is one of STAGES (every default stage when STAGES is unset)
  [ -z "${STAGES:-}" ] || [[ ",$STAGES," == *",$1,"* ]]
}

stage() {  # stage NAME MIN_S CMD...: run CMD unless less than MIN_S of the budget is left
  local name=$1 need=$2; shift 2
  wants "$name" || return
  local left=$(( BUDGET_S - ($(date +%s) - T0) ))
  if (( left < need )); then
    note "$name" "{\"skipped\": \"time budget: ${left}s left, needs ${need}s\"}"
    return
  fi
  local t=$(date +%s)
  timeout --signal=TERM --kill-after=15 "$left" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -c 20000 "$OUT/$name.log" > "$OUT/$name.log.tail" && mv "$OUT/$name.log.tail" "$OUT/$name.log"
  note "$name" "{\"exit\": $rc, \"seconds\": $(( $(date +%s) - t ))}"
}

if [ -z "${BENCH:-}" ]; then
  BENCH=$WORK/synthetic
  "$PY" -m wmsub.dev.synthetic "$BENCH" 6 > /dev/null
  note bench "\"synthetic stand-in (no BENCH given): sizes vary, steady state needs 2 videos of a size per rank\""
else
  note bench "\"$BENCH\""
fi
"$PY" - "$BENCH" "$WORK" <<'EOF'
# split BENCH: the 1248x704 instances for the throughput runs, the odd-token one alone
import json, sys
from pathlib import Path
from PIL import Image
from wmsub.benchmark.sizes import i2v_size
bench, work = Path(sys.argv[1]), Path(sys.argv[2])
entries = json.loads((bench / "worldmodelbench.json").read_text())
def size(e):
    with Image.open(bench / e["first_frame"]) as im:
        return "%dx%d" % i2v_size(*im.size, 704 * 1280)
groups = {"common": [e for e in entries if size(e) == "1248x704"] or entries,
          "odd": [e for e in entries if size(e) == "1312x672"]}
for name, chosen in groups.items():
    dst = work / f"bench-{name}"
    (dst / "images").mkdir(parents=True, exist_ok=True)
    for e in chosen:
        (dst / e["first_frame"]).write_bytes((bench / e["first_frame"]).read_bytes())
    (dst / "worldmodelbench.json").write_text(json.dumps(chosen))
EOF

# the 5B checkpoint (real-size random weights) is written while the sp sizes run
CKPT_PID=
if wants odd_sp_flash || wants exact_sp || wants fast_cfg || wants fast_dp || wants two_gpu_cfg; then
  "$PY" -m bench.throughput --checkpoint-only --ckpt "$CKPT" > "$OUT/checkpoint.json" 2> "$OUT/checkpoint.log" &
  CKPT_PID=$!
fi

# issue 14 item 5: the six sizes under sp, every kernel (flash3 when installed), vs none
stage sp_sizes 60 "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 tools/sp_sizes.py \
  --kernels flash,cudnn,efficient,flash3 --out "$OUT/sp_sizes.json"
[ -n "$CKPT_PID" ] && wait "$CKPT_PID" && note checkpoint "$(cat "$OUT/checkpoint.json" 2>/dev/null || echo null)"

# issue 14 item 1: one rank failing alone mid-video ends the whole 2-GPU job within its bound
stage failure 90 "$PY" tools/two_gpu.py --failure --out "$OUT/failure.json"

TP="$PY -m bench.throughput --ckpt $CKPT --steps $STEPS --gpus 2"
# issue 14 item 5 in the product path: the odd-token instance, sp, the flash kernel
if [ -s "$WORK/bench-odd/worldmodelbench.json" ] && [ "$(cat "$WORK/bench-odd/worldmodelbench.json")" != "[]" ]; then
  stage odd_sp_flash 60 $TP --bench-root "$WORK/bench-odd" --instances 1 --steps 4 \
    --config configs/wan22_ti2v_5b.yaml --parallel sp --work "$WORK/odd" \
    --out "$OUT/odd_sp_flash.json" generate.attention=flash
fi
# issue 17 item 5: the product path's throughput (2 videos per rank: one steady gap each)
stage exact_sp 90 $TP --bench-root "$WORK/bench-common" --instances 3 \
  --config configs/wan22_ti2v_5b.yaml --parallel sp --work "$WORK/exact_sp" --out "$OUT/exact_sp.json"
stage fast_cfg 120 $TP --bench-root "$WORK/bench-common" --instances 2 --repeat 2 \
  --config configs/wan22_ti2v_5b_fast.yaml --parallel cfg --work "$WORK/fast_cfg" --out "$OUT/fast_cfg.json"
stage fast_dp 90 $TP --bench-root "$WORK/bench-common" --instances 4 \
  --config configs/wan22_ti2v_5b_fast.yaml --parallel dp --work "$WORK/fast_dp" --out "$OUT/fast_dp.json"
# the 2-GPU run still missing: cfg against none, bitwise under NCCL
stage two_gpu_cfg 100 "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 tools/two_gpu.py --skip-sp \
  --ckpt "$CKPT" --out "$OUT/two_gpu_cfg.json"
# issue 17 item 1: FA3 against flash and cuDNN, per forward and per step, one GPU
stage speed_flash3 60 "$PY" -m bench.speed --steps 2 --out "$OUT/speed_flash3.json" \
  --variants official_flash,official_cudnn,official_flash3,fast_full,fast_full_flash3

# the same with the surviving peer stuck in a C call (the deadline's kill path)
stage failure_stuck 90 "$PY" tools/two_gpu.py --failure --failure-stuck --out "$OUT/failure_stuck.json"

# issue 18, the A14B engine (real-size random experts; only when named in STAGES):
# two GPUs: our sp against the official WanI2V(dit_fsdp, t5_fsdp, use_sp) at 480p, then sp, cfg
# and dp timed; sp timed at 720p; one GPU: exact and fast s/step at 480p and 720p
if [[ ",${STAGES:-}," == *",a14b_"* ]]; then
  A14B="$PY tools/verify_official_i2v.py --ckpt $WORK/a14b --steps ${A14B_STEPS:-4}"
  # the official in a process of its own (its FSDP experts outlive `del`), then ours
  stage a14b_x2_official 150 "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 \
    tools/verify_official_i2v.py --two-gpu --ckpt "$WORK/a14b" --steps "${A14B_STEPS:-4}" \
    --compare-area "480*832" --official-out "$WORK/a14b_official.pt" --out "$OUT/a14b_x2_official.json"
  stage a14b_x2 150 "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 \
    tools/verify_official_i2v.py --two-gpu --ckpt "$WORK/a14b" --steps "${A14B_STEPS:-4}" \
    --compare-area "480*832" --official-in "$WORK/a14b_official.pt" --modes sp,cfg,dp \
    --out "$OUT/a14b_x2.json"
  stage a14b_x2_720p 120 "$PY" -m torch.distributed.run --standalone --nproc_per_node 2 \
    tools/verify_official_i2v.py --two-gpu --ckpt "$WORK/a14b" --steps "${A14B_STEPS:-4}" \
    --skip-compare --compare-area "720*1280" --modes sp --out "$OUT/a14b_x2_720p.json"
  stage a14b_x1 120 $A14B --skip-compare --timing-steps "${A14B_STEPS:-4}" \
    --timings "${A14B_X1_TIMINGS:-exact@720*1280,fast@480*832,fast@720*1280}" --out "$OUT/a14b_x1.json"
fi

note total_s "$(( $(date +%s) - T0 ))"
cat "$OUT/summary.json"
