#!/usr/bin/env bash
# What a session with a GPU runs (the device tool's machine, or any CUDA box with torch and
# triton installed), in named stages so that each lease call picks what fits. Each stage has
# its own time limit so one slow stage cannot starve the others.
#   tools/gpu_checks.sh LOG_DIR [STAGE ...]      (no STAGE: the default list, about 15 minutes)
# Stages: tests host_overhead backward backward_choice profile paths linear_paths models
#         models_targets layers_graph layers_eager fwd_bwd other_dtypes nchw depthwise tune
#         retune max_autotune models_compile nchw_bwd nchw_dtypes linear_bwd models_dtypes
#         model_shapes models_nchw
# Presets (a name that stands for a list, in priority order):
#   lease15: what one call of a 15-device-minute lease can do (the start and give-back take the
#            rest): tests linear_paths models_targets layers_graph host_overhead, with
#            BUDGET_S=520 and TESTS_LIMIT_S=180 unless set (the suite took 81 s on 14 workers
#            when it had half today's tests; cut off, its log still names each failure so far).
#            The later leases' stages, one call each, are in docs/gpu_plan.md.
# BUDGET_S (environment): seconds all stages may take together; a stage whose time limit does
# not fit in what is left is skipped and says so, so the script ends inside the device call's
# timeout. Unset: no budget.
# OUT (environment; set by the device tool on its machine): after every stage the files this
# run changed under perf/results and elutriton/configs, and LOG_DIR, are packed into
# $OUT/gpu_results.tar.gz (the tool brings back at most 8 files from $OUT), so a call killed
# at its limit still returns what finished. Unpack it at the repository root here: the results
# and tables land in place, the logs in a folder named like LOG_DIR's last part.
# Results land in perf/results/<gpu-name>/ (merged with rows already there) and
# elutriton/configs/sm<NN>.json; logs in LOG_DIR.
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${1:?usage: tools/gpu_checks.sh LOG_DIR [STAGE ...]}
shift
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(tests host_overhead backward backward_choice tune paths models layers_graph layers_eager
                                  fwd_bwd other_dtypes nchw depthwise max_autotune models_compile)
if [ "${STAGES[*]}" = lease15 ]; then
    STAGES=(tests linear_paths models_targets layers_graph host_overhead)
    BUDGET_S=${BUDGET_S:-520}
    TESTS_LIMIT_S=${TESTS_LIMIT_S:-180}
fi
BUDGET_S=${BUDGET_S:-}
mkdir -p "$LOG"
LOG=$(cd "$LOG" && pwd)
STARTED=$(mktemp /tmp/elutriton-gpu-checks.XXXXXX)  # files newer than this were written here
T0=$SECONDS
export TRITON_INTERPRET=0 PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
PY=${PYTHON:-python3}
# Optional packages carried in .wheels (tools/fetch_wheels.sh; the GPU machine has no network):
# installed offline into a temporary folder put on PYTHONPATH, never into the
# machine's own environment. Today: the cuDNN frontend, for the "cudnn fused graph" baseline.
if [ -d .wheels ] && ! $PY -c "import cudnn" >/dev/null 2>&1; then
    WHEELS_TARGET=$(mktemp -d /tmp/elutriton-pydeps.XXXXXX)
    if $PY -m pip install -q --disable-pip-version-check --no-index --no-deps \
            --find-links .wheels --target "$WHEELS_TARGET" nvidia-cudnn-frontend \
            > "$LOG/wheels.log" 2>&1; then
        export PYTHONPATH="$PYTHONPATH:$WHEELS_TARGET"
    fi
    echo "== wheels: $($PY -c 'import cudnn; print("cudnn frontend", cudnn.__version__)' 2>&1 | tail -1)"
fi
pack() {  # the changed results, tables and the logs into $OUT (when the device tool set it)
    [ -n "${OUT:-}" ] && [ -d "$OUT" ] || return 0
    local list
    list=$(mktemp)
    find perf/results elutriton/configs -type f -newer "$STARTED" > "$list" 2>/dev/null
    tar czf "$OUT/gpu_results.tar.gz.part" -T "$list" -C "$(dirname "$LOG")" "$(basename "$LOG")" \
        && mv "$OUT/gpu_results.tar.gz.part" "$OUT/gpu_results.tar.gz"
    rm -f "$list"
}
step() {  # step NAME SECONDS CMD...: run with a time limit, log, report the exit code
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    if [ -n "$BUDGET_S" ] && [ $((SECONDS - T0 + limit)) -gt "$BUDGET_S" ]; then
        echo "== $name: skipped (needs $limit s, $((BUDGET_S - SECONDS + T0)) s of BUDGET_S left)"
        return
    fi
    timeout "$limit" "$@" > "$LOG/$name.log" 2>&1
    echo "== $name: rc=$? in $((SECONDS - t0)) s"
    pack
}
BENCH=($PY -m perf.bench)
CL=(--layouts channels_last)
for stage in "${STAGES[@]}"; do
case $stage in
tests)  # -v: a line per test as it ends, so a run cut off at its limit still names its failures
    step tests "${TESTS_LIMIT_S:-280}" $PY -m pytest -v -p no:benchmark -p no:cacheprovider -n 14 \
        -rfE --durations=15 tests
    if [ -f "$LOG/tests.log" ]; then
        grep -E "(FAILED|ERROR) |[0-9]+ (passed|failed)" "$LOG/tests.log" | tail -25
        echo "== tests: $(grep -cE " PASSED " "$LOG/tests.log") passed, $(grep -cE \
            " (FAILED|ERROR) " "$LOG/tests.log") failed or errors so far (each on a line of" \
            "$(basename "$LOG")/tests.log)"
    fi ;;
host_overhead)
    step host_overhead 45 $PY -m perf.host_overhead ;;
backward)  # Triton gradient kernels against cuDNN's backward, ELU-CIFAR layers (issue 14);
    # fwd too, so the summary's "Backward alone" table can subtract it
    step backward 150 "${BENCH[@]}" "${CL[@]}" --sets elu_cifar --ops conv \
        --dtypes fp16 bf16 fp32 --directions fwd fwd+bwd_params fwd+bwd --compile-modes none \
        --timer cudagraph --deadline-s 130 ;;
backward_choice)  # the measured per-shape backward choice (table sections backward[_params])
    step backward_choice 150 $PY -m perf.tune --backward --sets elu_cifar \
        --dtypes float16 bfloat16 ;;
profile)  # where eager whole-model steps spend host and GPU time
    step profile_mlp 60 $PY -m perf.profile_step --model selu_mlp --task infer --out "$LOG"
    step profile_cifar 60 $PY -m perf.profile_step --model elu_cifar --task train --out "$LOG"
    # ResNet-50-ELU inference lost 0.75x eagerly once 13 of its 16 fused shapes took the
    # library path (1.02x before), while its CUDA-graph rows gained: where did the time go?
    step profile_rn50 90 $PY -m perf.profile_step --model resnet50_elu --task infer --out "$LOG" ;;
paths)  # the per-shape choice, fused or library path, for every conv/linear shape
    step paths 150 $PY -m perf.tune --paths --dtypes float16 bfloat16 float32 ;;
linear_paths)  # the SELU-MLP linear layers' choice again, timed on rotating inputs (their
    # table entries were set by hand from the last lease's rows, where the fused kernel lost)
    step linear_paths 70 $PY -m perf.tune --paths --sets selu_mlp \
        --dtypes float16 bfloat16 float32 ;;
models)
    step models 130 $PY -m perf.models --dtypes fp16 --modes "unfused eager" "fused eager" \
        "unfused cudagraphs" "fused cudagraphs" --steps 10 --deadline-s 100 ;;
models_targets)  # the whole-model rows the open targets read, fp16: ELU-CIFAR and the SELU
    # MLP (train and infer), then ResNet-50-ELU inference (BatchNorm folded), which the
    # models stage's deadline cut off in the last lease
    step models_targets 100 $PY -m perf.models --models elu_cifar selu_mlp --dtypes fp16 \
        --modes "unfused eager" "fused eager" "unfused cudagraphs" "fused cudagraphs" --steps 10 \
        --deadline-s 75
    step models_rn50_infer 90 $PY -m perf.models --models resnet50_elu --tasks infer \
        --dtypes fp16 --modes "unfused eager" "fused eager" "unfused cudagraphs" \
        "fused cudagraphs" --steps 10 --deadline-s 60 ;;
models_nchw)  # NCHW models as written: fused as is, or with fuse(channels_last=True) (issue 11:
    # should that be fuse's default on CUDA?)
    step models_nchw 200 $PY -m perf.models --models elu_cifar resnet50_elu --dtypes fp16 \
        --layouts nchw --modes "unfused eager" "fused eager" "fused-cl eager" \
        "unfused cudagraphs" "fused cudagraphs" "fused-cl cudagraphs" --steps 10 \
        --deadline-s 170 ;;
models_compile)
    step models_compile 200 $PY -m perf.models --dtypes fp16 --modes "unfused compile" \
        "fused compile" "unfused max-autotune" --steps 10 --deadline-s 150 ;;
layers_graph)  # GPU time alone, fp16 channels_last forward, every conv/linear/bias_elu shape
    step layers_graph 80 "${BENCH[@]}" "${CL[@]}" --dtypes fp16 --directions fwd \
        --compile-modes none --timer cudagraph --deadline-s 60 ;;
layers_eager)  # per call as an eager user sees it (host time included)
    step layers_eager 85 "${BENCH[@]}" "${CL[@]}" --dtypes fp16 --directions fwd \
        --compile-modes none --deadline-s 60 ;;
fwd_bwd)
    step fwd_bwd 170 "${BENCH[@]}" "${CL[@]}" --dtypes fp16 --directions fwd+bwd fwd+bwd_params \
        --compile-modes none --timer cudagraph --deadline-s 80 ;;
other_dtypes)
    step other_dtypes 85 "${BENCH[@]}" "${CL[@]}" --dtypes bf16 fp32 --directions fwd \
        --compile-modes none --timer cudagraph --deadline-s 60 ;;
nchw)
    step nchw 110 "${BENCH[@]}" --layouts nchw --ops conv --dtypes fp16 --directions fwd \
        --compile-modes none --timer cudagraph --deadline-s 85 ;;
model_shapes)  # the models' own fused layers at their batch sizes: configs, then paths
    step model_configs 300 $PY -m perf.tune --resume --models elu_cifar selu_mlp resnet50_elu \
        --dtypes float16 bfloat16
    step model_paths 150 $PY -m perf.tune --paths --models elu_cifar selu_mlp resnet50_elu \
        --dtypes float16 bfloat16 ;;
nchw_bwd)  # NCHW input and output, forward+backward
    step nchw_bwd 170 "${BENCH[@]}" --layouts nchw --ops conv --dtypes fp16 \
        --directions fwd+bwd fwd+bwd_params --compile-modes none --timer cudagraph \
        --deadline-s 120 ;;
nchw_dtypes)
    step nchw_dtypes 120 "${BENCH[@]}" --layouts nchw --ops conv --dtypes bf16 fp32 \
        --directions fwd --compile-modes none --timer cudagraph --deadline-s 90 ;;
linear_bwd)
    step linear_bwd 90 "${BENCH[@]}" --ops linear --dtypes bf16 fp32 \
        --directions fwd+bwd fwd+bwd_params --compile-modes none --timer cudagraph \
        --deadline-s 60 ;;
models_dtypes)
    step models_dtypes 240 $PY -m perf.models --dtypes bf16 fp32 --modes "unfused eager" \
        "fused eager" "unfused cudagraphs" "fused cudagraphs" --steps 10 --deadline-s 200 ;;
depthwise)
    step depthwise 40 "${BENCH[@]}" "${CL[@]}" --sets depthwise --dtypes fp16 --directions fwd \
        --compile-modes none --timer cudagraph ;;
tune)  # only shapes missing from the table
    step tune 120 $PY -m perf.tune --resume --dtypes float16 bfloat16 float32 ;;
retune)  # every shape again: split-K, the single K loop and (sm_90) the TMA GEMM are timed
    # only here; the table is written after each shape, so a timeout keeps what was swept.
    # Run `paths` after it: the fused kernel's times change.
    step retune 420 $PY -m perf.tune --dtypes float16 bfloat16 float32 ;;
max_autotune)
    step max_autotune 120 "${BENCH[@]}" "${CL[@]}" --dtypes fp16 --directions fwd \
        --shapes cifar_s1_1_192x5 cifar_s2_2_240x3 cifar_s3_2_260x2 cifar_s4_2_280x2 \
        --compile-modes max-autotune --timer cudagraph --deadline-s 70 ;;
*) echo "unknown stage $stage" ;;
esac
done
$PY -m perf.targets > "$LOG/targets.log" 2>&1  # every target met / not met / unmeasured
pack
rm -f "$STARTED"
tail -n 3 "$LOG"/*.log | grep -v "benchmarking:" | cut -c1-300
