"""Timing for the tuner (and the perf harness, which imports it from here).

On a CUDA GPU: ``triton.testing.do_bench`` (warm-up, L2 flushed between runs, median with
20%/80% quantiles) or, without host overhead, ``do_bench_cudagraph``; inputs rotate through
several copies when one set would fit in L2. Off the GPU (tests under the interpreter) a
wall-clock stand-in runs the same code paths; its numbers mean nothing and are labelled
``cpu-standin``.
"""
import statistics
import time

L2_BYTES_GUESS = 50 * 2**20  # H100: 50 MB
QUANTILES = (0.5, 0.2, 0.8)


def copies_needed(input_bytes: int, l2_bytes: int = L2_BYTES_GUESS) -> int:
    """How many input sets to rotate through so consecutive runs do not hit in L2."""
    if input_bytes <= 0:
        return 1
    return max(1, min(8, -(-2 * l2_bytes // input_bytes)))


def rotating(make_call, make_inputs, input_bytes):
    """A callable cycling over ``copies_needed`` independent input sets."""
    calls = [make_call(*make_inputs()) for _ in range(copies_needed(input_bytes))]
    state = {"i": 0}

    def run():
        state["i"] = (state["i"] + 1) % len(calls)
        return calls[state["i"]]()

    return run


def measure(fn, device: str):
    """(median_ms, q20_ms, q80_ms, method) of ``fn`` launched from Python."""
    if device == "cuda":
        from triton.testing import do_bench
        median, q20, q80 = do_bench(fn, quantiles=list(QUANTILES))
        return median, q20, q80, "do_bench"
    times = []
    for _ in range(3):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return statistics.median(times), times[0], times[-1], "cpu-standin"


def kernel_time(fn, device: str):
    """Like ``measure`` but without host overhead: on a GPU, ``fn`` is captured in a CUDA
    graph and replayed (``triton.testing.do_bench_cudagraph``), so the time is the kernels'
    alone. The tuner ranks configs this way; launch cost is the same for every config."""
    if device == "cuda":
        from triton.testing import do_bench_cudagraph
        median, q20, q80 = do_bench_cudagraph(fn, quantiles=list(QUANTILES))
        return median, q20, q80, "do_bench_cudagraph"
    return measure(fn, device)
