#!/usr/bin/env bash
# What a session with a GPU runs (the device tool's machine, or any CUDA box with torch and
# triton installed): the test suite on the GPU, the tuner, and bench subsets that fit a short
# lease. Each step has its own time limit so one slow step cannot starve the others.
#   tools/gpu_checks.sh LOG_DIR
# Results land in perf/results/<gpu-name>/ (merged with rows already there) and
# elutriton/configs/sm<NN>.json; logs in LOG_DIR.
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${1:?usage: tools/gpu_checks.sh LOG_DIR}
mkdir -p "$LOG"
export TRITON_INTERPRET=0 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
PY=${PYTHON:-python3}
step() {  # step NAME SECONDS CMD...: run with a time limit, log, report the exit code
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$LOG/$name.log" 2>&1
    echo "== $name: rc=$? in $((SECONDS - t0)) s"
}
step tests 125 $PY -m pytest -q -p no:benchmark -p no:cacheprovider -n 12 -rfE tests
grep -E "^(FAILED|ERROR)|passed|failed" "$LOG/tests.log" | tail -15
step host_overhead 40 $PY -m perf.host_overhead
step tune 90 $PY -m perf.tune --resume --dtypes float16 bfloat16 float32
BENCH=($PY -m perf.bench --layouts channels_last)
step depthwise 35 "${BENCH[@]}" --sets depthwise --dtypes fp16 --directions fwd \
    --compile-modes default
step depthwise_graph 25 "${BENCH[@]}" --sets depthwise --dtypes fp16 --directions fwd \
    --compile-modes none --timer cudagraph
step fwd_bwd 110 "${BENCH[@]}" --dtypes fp16 --directions fwd+bwd --compile-modes default \
    --deadline-s 70
step other_dtypes_graph 70 "${BENCH[@]}" --dtypes bf16 fp32 --directions fwd \
    --sets resnet50 memory_bound_conv selu_mlp elementwise --compile-modes none \
    --timer cudagraph --deadline-s 40
step models 120 $PY -m perf.models --dtypes fp16 --modes "unfused eager" "fused eager" \
    "unfused cudagraphs" "fused cudagraphs" --steps 10
step max_autotune 90 "${BENCH[@]}" --dtypes fp16 --directions fwd \
    --shapes cifar_s1_1_192x5 cifar_s2_2_240x3 cifar_s3_2_260x2 cifar_s4_2_280x2 \
    --compile-modes max-autotune --deadline-s 45
tail -n 3 "$LOG"/*.log | grep -v "benchmarking:" | cut -c1-300
