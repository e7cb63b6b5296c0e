"""Where benchmark results live and how they are read and written: the results folder, the
measured CSV (rows merged across runs), the environment record, the shape-set selection the
harness and the tuner share, and an optional progress bar."""
import csv
import datetime
import platform
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
NO_GPU = RESULTS / "no-gpu"
# providers of the measured CSV that force one backward (perf/baselines.py writes them,
# perf/summary.py and perf/targets.py read them)
BACKWARD_CUDNN = "elutriton, cuDNN backward"
BACKWARD_TRITON = "elutriton, Triton backward"
# the fused kernel reading an NCHW input and writing an NCHW output through their strides,
# without the op's conversion pass (NCHW layout, forward only: issue 10's question)
NCHW_DIRECT = "elutriton kernel, NCHW read directly"


def device_dir(name: str, root: Path = RESULTS) -> Path:
    """The results folder of a device: ``<root>/<name with spaces as _>``."""
    return root / name.replace(" ", "_")


def progress(iterable, **kwargs):
    """``tqdm(iterable, **kwargs)`` on stderr when tqdm is installed, else the iterable."""
    try:
        from tqdm import tqdm
    except ImportError:
        return iterable
    return tqdm(iterable, file=sys.stderr, **kwargs)


def select_shapes(sets, names=None, ops=None):
    """Shapes of the named sets of perf/shapes.py ('tiny': every tiny shape; None: all sets),
    kept where their op is in ``ops`` and their name in ``names`` (None: no filter)."""
    from perf.shapes import SHAPE_SETS, TINY_SETS, op_of
    shapes = []
    for name in sets or list(SHAPE_SETS):
        shapes += [s for group in TINY_SETS.values() for s in group] if name == "tiny" \
            else SHAPE_SETS[name]
    return [s for s in shapes if (ops is None or op_of(s) in ops)
            and (not names or s.name in names)]


def environment(device):
    import torch
    import triton
    info = {"date": datetime.date.today().isoformat(), "torch": torch.__version__,
            "triton": triton.__version__, "python": platform.python_version()}
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
        try:
            info["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            info["driver"] = "unknown"
    else:
        info["gpu"] = "none"
    return info


def write_csv(rows, path):
    if not rows:
        return
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


# A measured row is identified by these columns; a later run replaces a row with the same key.
ROW_KEY = ("op", "shape", "dtype", "layout", "direction", "provider", "tf32", "method")
NUMERIC_COLUMNS = ("median_ms", "q20_ms", "q80_ms", "gbps", "tflops", "speedup_vs_eager")


def markdown_table(text):
    """[{column: cell}] of the markdown table in ``text`` (the first line starting with "|" is
    its header; separator lines are skipped), cells as written, stripped."""
    columns, rows = None, []
    for line in text.splitlines():
        if not line.startswith("|") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if columns is None:
            columns = cells
        else:
            rows.append(dict(zip(columns, cells)))
    return rows


def read_measured(path):
    """Rows of an earlier measured.csv, numbers parsed (empty cells become None)."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for col in NUMERIC_COLUMNS:
            r[col] = float(r[col]) if r.get(col) not in (None, "") else None
    return rows


def merge_rows(old, new):
    """``old`` with every row whose key appears in ``new`` replaced; order kept."""
    fresh = {tuple(r[k] for k in ROW_KEY) for r in new}
    return [r for r in old if tuple(r[k] for k in ROW_KEY) not in fresh] + new
