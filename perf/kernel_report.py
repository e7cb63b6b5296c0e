"""Static kernel report: every shipped config of every kernel, compiled ahead of time for
sm_80 and sm_90 with no GPU present, and the cubin read with the triton wheel's cuobjdump.

Writes ``perf/results/kernel_report.json`` (a list of records) and ``kernel_report.md`` (a
table). Each record: kernel, arch, dtype, variant, config, registers, spill_bytes (local
memory), shared_bytes, max_load_bits / max_store_bits (widest global access), tensor_core_ops
(HMMA/HGMMA instructions), dmma_ops (fp64 tensor-core instructions), occupancy (resident warps
per SM from registers, shared memory and the arch's limits), and ok/problems against the
project's static targets. Run: ``make report`` or ``python -m perf.kernel_report``.
"""
import argparse
import json
import multiprocessing
import os
import re
import subprocess
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from perf.results_io import RESULTS, progress

# Per-SM limits (CUDA occupancy calculator values).
ARCH_LIMITS = {
    80: dict(regs=65536, max_warps=64, max_blocks=32, shared=167936, reserved_shared=1024),
    90: dict(regs=65536, max_warps=64, max_blocks=32, shared=233472, reserved_shared=1024),
}
REG_ALLOC_UNIT = 256  # registers are allocated per warp in units of 256 (8 per thread)


def occupancy(arch, registers, shared_bytes, num_warps):
    """Resident warps per SM for blocks of ``num_warps`` warps."""
    lim = ARCH_LIMITS[arch]
    regs_per_warp = -(-max(registers, 1) * 32 // REG_ALLOC_UNIT) * REG_ALLOC_UNIT
    by_regs = (lim["regs"] // regs_per_warp) // num_warps
    by_warps = lim["max_warps"] // num_warps
    by_shared = lim["shared"] // (shared_bytes + lim["reserved_shared"])
    return min(by_regs, by_warps, by_shared, lim["max_blocks"]) * num_warps


def cuobjdump_path():
    import triton
    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"


ACCESS_BITS = {"U8": 8, "S8": 8, "U16": 16, "S16": 16, "64": 64, "128": 128}


def _access_bits(opcode):
    bits = 32
    for part in opcode.split(".")[1:]:
        bits = ACCESS_BITS.get(part, bits)
    return bits


def analyse_cubin(cubin_path):
    """(registers, spill bytes, static shared, max load bits, max store bits, mma counts)."""
    tool = str(cuobjdump_path())
    res = subprocess.run([tool, "-res-usage", cubin_path], capture_output=True, text=True,
                         check=True).stdout
    match = re.search(r"REG:(\d+) STACK:(\d+) SHARED:(\d+) LOCAL:(\d+)", res)
    registers, stack, shared, local = (int(v) for v in match.groups())
    sass = subprocess.run([tool, "-sass", cubin_path], capture_output=True, text=True,
                          check=True).stdout
    opcodes = re.findall(r"/\*[0-9a-f]{4}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]+)", sass)
    loads = [_access_bits(op) for op in opcodes if op.startswith(("LDG", "LDGSTS"))]
    stores = [_access_bits(op) for op in opcodes if op.startswith("STG")]
    return dict(
        registers=registers, spill_bytes=local + stack, static_shared=shared,
        max_load_bits=max(loads, default=0), max_store_bits=max(stores, default=0),
        tensor_core_ops=sum(op.startswith(("HMMA", "HGMMA")) for op in opcodes),
        dmma_ops=sum(op.startswith("DMMA") for op in opcodes),
        tma_ops=sum(op.startswith(("UTMALDG", "UBLKCP")) for op in opcodes),
    )


def compile_one(job):
    """Compile one (kernel, arch, dtype, config) job; return its record."""
    from perf.kernel_specs import build_source
    import triton
    from triton.backends.compiler import GPUTarget

    src, options = build_source(job)
    record = {k: job[k] for k in ("kernel", "arch", "dtype", "variant", "config")}
    try:
        compiled = triton.compile(src, target=GPUTarget("cuda", job["arch"], 32),
                                  options=options)
    except Exception as exc:  # a config that fails to compile is a finding, not a crash
        record.update(error=f"{type(exc).__name__}: {str(exc)[:300]}", ok=False,
                      problems=["compile error"])
        return record
    cubin = Path(job["scratch"]) / f"{job['id']}.cubin"
    cubin.write_bytes(compiled.asm["cubin"])
    stats = analyse_cubin(str(cubin))
    cubin.unlink()
    shared_bytes = max(int(compiled.metadata.shared), stats.pop("static_shared"))
    record.update(stats, shared_bytes=shared_bytes,
                  occupancy=occupancy(job["arch"], stats["registers"], shared_bytes,
                                      options["num_warps"]))
    problems = []
    if record["spill_bytes"]:
        problems.append("spills")
    if job["expect"].get("vector_io") and min(record["max_load_bits"], record["max_store_bits"]) < 128:
        problems.append("global access narrower than 128 bits")
    if job["expect"].get("tensor_cores") and record["tensor_core_ops"] == 0:
        problems.append("no tensor-core instructions")
    if job["expect"].get("tma") and record["tma_ops"] == 0:
        problems.append("no TMA instructions")
    record.update(ok=not problems, problems=problems)
    return record


def summary_lines(records):
    """One markdown row per kernel: configs, worst registers/spills, widest access, MMA use."""
    lines = ["| kernel | configs (all archs) | with problems | max regs | max spill B | "
             "widest load / store bits | tensor-core instructions |",
             "|---|---|---|---|---|---|---|"]
    for kernel in dict.fromkeys(r["kernel"] for r in records):
        rows = [r for r in records if r["kernel"] == kernel]
        built = [r for r in rows if "error" not in r]
        if not built:
            lines.append(f"| {kernel} | {len(rows)} | {len(rows)} (compile errors) | | | | |")
            continue
        mma = [r for r in built if r["tensor_core_ops"] + r["dmma_ops"] > 0]
        lines.append(
            f"| {kernel} | {len(rows)} | {sum(not r['ok'] for r in rows)} | "
            f"{max(r['registers'] for r in built)} | {max(r['spill_bytes'] for r in built)} | "
            f"{max(r['max_load_bits'] for r in built)} / {max(r['max_store_bits'] for r in built)}"
            f" | {f'in {len(mma)} of {len(built)} configs' if mma else 'none (not a GEMM)'} |")
    return lines


def write_markdown(records, path):
    bad = [r for r in records if not r["ok"]]
    lines = ["# Static kernel report (predicted from compiled code; no GPU involved)", "",
             "Compiled ahead of time with triton for sm_80 and sm_90; read with cuobjdump. "
             "`occupancy` is resident warps per SM computed from registers and shared memory.", "",
             f"{len(records)} compiled configs, {len(bad)} with problems (a spill, a scalar global "
             "access in an elementwise kernel, a 16-bit or TF32 GEMM config without tensor-core "
             "instructions, a TMA config without TMA instructions).", ""]
    lines += summary_lines(records) + ["", "## Every config", "",
                                       "| kernel | arch | dtype | variant | config | regs | "
                                       "spill B | smem B | ld bits | st bits | TC ops | "
                                       "occupancy | ok |",
                                       "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        cfg = " ".join(f"{k}={v}" for k, v in r["config"].items())
        if "error" in r:
            lines.append(f"| {r['kernel']} | sm_{r['arch']} | {r['dtype']} | {r['variant']} | {cfg} "
                         f"| compile error: {r['error'][:80]} | | | | | | | no |")
            continue
        lines.append(
            f"| {r['kernel']} | sm_{r['arch']} | {r['dtype']} | {r['variant']} | {cfg} | "
            f"{r['registers']} | {r['spill_bytes']} | {r['shared_bytes']} | {r['max_load_bits']} | "
            f"{r['max_store_bits']} | {r['tensor_core_ops'] + r['dmma_ops']} | {r['occupancy']} | "
            f"{'yes' if r['ok'] else ', '.join(r['problems'])} |")
    path.write_text("\n".join(lines) + "\n")


def nchw_probe_markdown(records, path):
    """The NCHW probe's table: each config's NHWC and NCHW compile side by side."""
    by_key = {(r["arch"], r["dtype"], r["variant"].rsplit("_", 1)[0], str(r["config"]),
               r["variant"].rsplit("_", 1)[1]): r for r in records if "error" not in r}
    lines = ["# NCHW probe: the fused conv kernel reading and writing NCHW tensors directly",
             "", "Static (compiled code, no GPU, no timing): the 16-bit GEMM configs compiled for "
             "two ResNet-50 stage-1 layers with x and y stored NHWC (what the op runs, after "
             "converting an NCHW input) and NCHW (read and written through their strides, no "
             "conversion). Regenerate with `python -m perf.kernel_report --nchw-probe`. "
             "Registers, spill bytes and the widest global load / store in bits (LDG/STG "
             "instructions; a store width of 0: no STG at all, the output leaves through "
             "other store instructions).", "",
             "| arch | dtype | layer | config | NHWC regs / spill / ld / st | "
             "NCHW regs / spill / ld / st |", "|---|---|---|---|---|---|"]

    def cells(r):
        return (f"{r['registers']} / {r['spill_bytes']} / {r['max_load_bits']} / "
                f"{r['max_store_bits']}" if r else "compile error")
    for (arch, dtype, layer, config, layout), r in by_key.items():
        if layout != "nhwc":
            continue
        nchw = by_key.get((arch, dtype, layer, config, "nchw"))
        cfg = " ".join(f"{k}={v}" for k, v in r["config"].items())
        lines.append(f"| sm_{arch} | {dtype} | {layer} | {cfg} | {cells(r)} | {cells(nchw)} |")
    nchw_rows = [r for r in records if r["variant"].endswith("_nchw")]
    nhwc_rows = [r for r in records if r["variant"].endswith("_nhwc")]
    lines += ["", f"Configs with spills: NHWC {sum(r.get('spill_bytes', 1) > 0 for r in nhwc_rows)}"
              f" of {len(nhwc_rows)}, NCHW {sum(r.get('spill_bytes', 1) > 0 for r in nchw_rows)} "
              f"of {len(nchw_rows)}."]
    path.write_text("\n".join(lines) + "\n")


def main(argv=None):
    from perf.kernel_specs import JOB_SOURCES, PROBE_SOURCES
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--arch", type=int, nargs="*", default=[80, 90], choices=[80, 90],
                        help="compute capabilities to compile for")
    parser.add_argument("--kernels", nargs="*", default=None, choices=list(JOB_SOURCES),
                        help="kernels to compile (None: all)")
    parser.add_argument("--out", type=Path, default=RESULTS,
                        help="folder for kernel_report.json and kernel_report.md")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="compiler processes")
    parser.add_argument("--nchw-probe", action="store_true",
                        help="instead of the report: compile the 16-bit GEMM configs for NCHW "
                             "tensors next to NHWC ones (nchw_probe.md)")
    args = parser.parse_args(argv)
    from perf.kernel_specs import all_jobs

    scratch = args.out / "_scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    sources = PROBE_SOURCES if args.nchw_probe else JOB_SOURCES
    jobs = all_jobs(args.arch, args.kernels, str(scratch), sources)
    # Workers are spawned without TRITON_INTERPRET: the kernels must be real JIT functions.
    # FP fusion as the JIT does it by default in triton 3.9 (set explicitly: no warning).
    os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    interpret = os.environ.pop("TRITON_INTERPRET", None)
    try:
        with ProcessPoolExecutor(max_workers=args.jobs,
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            records = list(progress(pool.map(compile_one, jobs), total=len(jobs),
                                    desc="compiling", mininterval=2.0))
    finally:
        if interpret is not None:
            os.environ["TRITON_INTERPRET"] = interpret
    if args.nchw_probe:
        nchw_probe_markdown(records, args.out / "nchw_probe.md")
        print(f"NCHW probe: {len(records)} configs -> {args.out / 'nchw_probe.md'}")
        return records
    (args.out / "kernel_report.json").write_text(json.dumps(records, indent=1))
    write_markdown(records, args.out / "kernel_report.md")
    bad = [r for r in records if not r["ok"]]
    print(f"kernel report: {len(records)} configs, {len(bad)} with problems -> "
          f"{args.out / 'kernel_report.json'}")
    for r in bad:
        print(f"  {r['kernel']} sm_{r['arch']} {r['dtype']} {r['variant']} {r['config']}: "
              f"{r.get('error') or r['problems']}")
    return records


if __name__ == "__main__":
    main()
