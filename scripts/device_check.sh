#!/usr/bin/env bash
# The one prepared script a session lent a GPU machine runs (issue 10): the CUDA tests, the decode bench
# (scripts/gpu_decode_bench.py: HF eager bf16 vs the compiled decode vs its quantized variants, built-in model
# and Qwen2-0.5B shape) and a small GPU sweep, everything written under $OUT.
#
# Before the call, here (once): echo /.whl/ >> .git/info/exclude; bash ../shared/device/wheels.sh .whl
# The call (device tool `run`, carry [".whl"], timeout_s 600):
#     bash scripts/device_check.sh                  # all steps: setup env bench late (late = tests + sweep)
#     bash scripts/device_check.sh setup bench      # or only some (setup is needed by every other step)
# Each step runs under `timeout`; a failed or timed-out step is recorded and the next one runs anyway.
# `late` runs the tests and the sweep at once (the tests' tiny model barely loads the card, and the sweep's own
# comparisons are interleaved); the bench, whose figures are the headline, has the card to itself.
#
# Budgets (seconds) and sizes come from the environment:
# - BENCH_S=285 SWEEP_S=255 TESTS_S=SWEEP_S (the tests run beside the sweep, so the same limit costs nothing).
#   With setup's 20 and env's 30: 590 s of limits, and up to 10 s more while a step stopped at its limit shuts down.
# - BENCH_ROUNDS=8, BENCH_MODELS=builtin,qwen2_0_5b_shape and BENCH_FLOAT_ONLY=builtin: the built-in model first, as
#   eager and compiled bf16 only (its bar is compiled vs eager, it costs one compile, and training it there also
#   serves the sweep); then the 0.5B shape with every variant. The bench rewrites its JSON after each stage of each
#   model (loads, greedy check, timings, then, once every model is timed, each kernel profile), so a timeout keeps
#   what it finished.
# - BENCH_MODES=reduce-overhead: each mode and each quant is one more compile; on the H200 the 0.5B shape's compiles
#   took 18-48 s each and `default` was 4.6x slower than reduce-overhead (add it back with
#   BENCH_MODES=reduce-overhead,default only if BENCH_S allows).
# - BENCH_QUANTS=int8_weight,int4 (fp8, whose compile was the longest at 47.6 s, was measured on the first run).
# - BENCH_TUNED=int8_weight: also compiled with compile_tuning=coordinate_descent, which tunes longer. On the H200
#   on 2026-11-29 untuned int8_weight spent 87 % of the card's busy time in aten's weight_int8pack_mm kernel, and
#   tuned ran 7.4x faster; int4 keeps lm_head in int8, a third of its time per token untuned.
#   BENCH_TUNED=int8_weight,int4 adds that A/B, about 50 s more, if BENCH_S allows.
# - BENCH_INT4_GROUP=128: a quarter of group 32's scale bytes (the first run's int4 was group 32; on the CPU the
#   built-in model's teacher-forced top-1 was 0.966 at 128 and 0.974 at 32, workload chat).
# - SWEEP_TRIALS=2 and SWEEP_CONFIRM=1: a smoke of the sweep within its budget (workload=smoke, batch 1, no
#   coordinate-descent tuning, no runoff). Its compiled trials took 35-75 s each there; on 2026-11-29 three trials
#   left no time for the pick's confirmation and bundle, which took 93 s after the last trial with two. Its trials
#   run beside the tests, so its per-trial figures are taken on a shared card and CPU; the pick's speed-up is the
#   confirmation's, interleaved with fp32.
# Bench and sweep share one inductor cache (TORCHINDUCTOR_CACHE_DIR), so equal graphs compile once.
# The device machine allows 15 minutes in all per session, start-up included, and 10 minutes per command.
# Files back in $OUT (8 at most): summary.txt (each step's exit status and seconds), env.txt, pytest.txt,
# bench.log, bench.json, sweep.log, sweep_front.md, workspace.tar.gz (the sweep's logs and reports: trial
# tracebacks). The sweep is priced as target=h100 (an H100 PCIe), but its rooflines use the bandwidth of the card
# it runs on (gpu_decode_bench.CARD_BANDWIDTH), logged in sweep.log.
# Ran on an H200 on 2026-11-27 and 2026-11-29 (experiments/2026-11-27-h200-compiled-decode.md,
# experiments/2026-11-29-h200-second-run.md); the budgets above follow them (2026-11-29: bench 248 s; the tests
# step 199 s of 200, pytest's own 191 s).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/device-out}
mkdir -p "$OUT"
PY=${PY:-python3}
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 AUTOOPT_WORKSPACE=${AUTOOPT_WORKSPACE:-/tmp/autoopt-ws}
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-/tmp/autoopt-inductor}
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(setup env bench late)

step() {  # step [-s SIGNAL] NAME SECONDS COMMAND...: run under timeout, record exit status and duration
    local signal=TERM
    [ "$1" = -s ] && { signal=$2; shift 2; }
    local name=$1 limit=$2; shift 2
    local start=$SECONDS rc
    echo "== $name (limit ${limit}s) ==" >&2
    timeout -s "$signal" --kill-after=10 "$limit" "$@"
    rc=$?
    [ $rc -eq 124 ] && echo "$name: timed out after ${limit}s" >&2
    printf '%-6s rc=%-3s %4ss (limit %ss)\n' "$name" "$rc" "$((SECONDS - start))" "$limit" >> "$OUT/summary.txt"
}

do_setup() {
    if ! ls .whl/*.whl > /dev/null 2>&1; then
        echo "no .whl/*.whl: run ../shared/device/wheels.sh .whl on the workstation and carry .whl" >&2
        return 1
    fi
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
}

do_env() {
    {
        nvidia-smi
        "$PY" -c 'import torchao; print("torchao", torchao.__version__)'
        "$PY" -c 'import triton; print("triton", triton.__version__)'
        # last, so that the step's exit status says whether torch sees a card
        "$PY" -c 'import sys, torch, transformers
print("python", sys.version.split()[0], "transformers", transformers.__version__)
print("torch", torch.__version__, "cuda", torch.version.cuda)
print("device", torch.cuda.get_device_name(), torch.cuda.get_device_capability())'
    } > "$OUT/env.txt" 2>&1
}

do_tests() {  # -v: each test's name and outcome as it ends; stopped by SIGINT (below), pytest still prints its failures
    "$PY" -m pytest tests/gpu -v -rs -p no:cacheprovider > "$OUT/pytest.txt" 2>&1
}

do_bench() {
    "$PY" scripts/gpu_decode_bench.py --device cuda --models "${BENCH_MODELS:-builtin,qwen2_0_5b_shape}" \
        --float-only "${BENCH_FLOAT_ONLY-builtin}" --threads "$(nproc)" \
        --rounds "${BENCH_ROUNDS:-8}" --compile-modes "${BENCH_MODES:-reduce-overhead}" \
        --quants "${BENCH_QUANTS:-int8_weight,int4}" --tuned "${BENCH_TUNED-int8_weight}" \
        --int4-group "${BENCH_INT4_GROUP:-128}" \
        --out "$OUT/bench.json" > "$OUT/bench.log" 2>&1
}

card_bandwidth_overrides() {  # the card actually used, so that rooflines are not against h100.yaml's PCIe figure
    "$PY" - <<'EOF'
import sys

sys.path.insert(0, "scripts")
import torch
from gpu_decode_bench import card_bandwidth

name = torch.cuda.get_device_name() if torch.cuda.is_available() else ""
card = card_bandwidth(name) if name else None
if card:
    print(f"target.memory_bandwidth_gbps={card[0]}")
    print(f"target.bandwidth_source='{card[1]}, for the card this ran on ({name})'")
EOF
}

do_sweep() {
    local rc overrides started
    started=$(mktemp)  # the sweep's front.md is newer than this (sweep.log itself keeps changing while it runs)
    mapfile -t overrides < <(card_bandwidth_overrides)
    echo "bandwidth overrides: ${overrides[*]:-none, so the h100 config figure}" > "$OUT/sweep.log"
    # Its own limit, under the step's, so that a sweep cut short still leaves its front.md copied below.
    timeout --kill-after=5 "$((${SWEEP_S:-255} - 15))" "$PY" -m autoopt target=h100 space=gpu workload=smoke search.n_trials="${SWEEP_TRIALS:-2}" \
        search.confirm_rounds="${SWEEP_CONFIRM:-1}" space.batch_size=[1] space.compile_tuning=[none] export.runoff_margin=0 bench.warmup_runs=1 bench.min_runs=3 bench.min_seconds=1 bench.profile=false \
        "${overrides[@]}" >> "$OUT/sweep.log" 2>&1
    rc=$?
    front=$(find "$AUTOOPT_WORKSPACE" -name front.md -newer "$started" 2>/dev/null | head -1)
    rm -f "$started"
    [ -n "$front" ] && cp "$front" "$OUT/sweep_front.md"
    tar -czf "$OUT/workspace.tar.gz" -C "$AUTOOPT_WORKSPACE" --exclude='*.db' --exclude=bundles . 2>/dev/null
    return $rc
}

: > "$OUT/summary.txt"
export OUT PY BENCH_MODELS BENCH_FLOAT_ONLY BENCH_ROUNDS BENCH_MODES BENCH_QUANTS BENCH_TUNED BENCH_INT4_GROUP SWEEP_TRIALS SWEEP_CONFIRM SWEEP_S
export -f do_setup do_env do_tests do_bench do_sweep card_bandwidth_overrides
for s in "${steps[@]}"; do
    case $s in
        setup) step setup 20 bash -c do_setup ;;
        env) step env 30 bash -c do_env ;;
        tests) step -s INT tests "${TESTS_S:-${SWEEP_S:-255}}" bash -c do_tests ;;
        bench) step bench "${BENCH_S:-285}" bash -c do_bench ;;
        sweep) step sweep "${SWEEP_S:-255}" bash -c do_sweep ;;
        late) step -s INT tests "${TESTS_S:-${SWEEP_S:-255}}" bash -c do_tests & step sweep "${SWEEP_S:-255}" bash -c do_sweep; wait ;;
        *) echo "unknown step $s; steps: setup env bench tests sweep late" >&2; exit 2 ;;
    esac
done
cat "$OUT/summary.txt"
