"""Training is the same: the ELU-CIFAR network trained fused and unfused on real images.

    python -m perf.loss_curves              # real Triton kernels (interpreter on CPU, GPU on a GPU)

The data: scikit-learn's handwritten digits (1797 8x8 grayscale images, 10 classes, shipped
inside the package: nothing is downloaded), scaled to [0, 1], resized to 32x32 and repeated to
3 channels so the ELU paper's CIFAR network (``examples/elu_cifar.py``, reduced width, 10
classes) takes them. Both models start from the same weights and see the same shuffled
batches; Adam (plain SGD barely moves this deep, narrow network in a few dozen steps). The plot puts both loss curves on one figure with their largest
difference. Without a GPU the fused model's kernels run under Triton's interpreter (this
module sets ``TRITON_INTERPRET=1`` unless it is already set), so what is compared is the real
kernels' arithmetic, not a timing.
"""
import argparse
import copy
import csv
import os
import sys
from pathlib import Path

os.environ.setdefault("TRITON_INTERPRET", "0" if "--gpu" in sys.argv else "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from perf.results_io import NO_GPU, device_dir, environment  # noqa: E402


def digits(device):
    """(images [N, 3, 32, 32], labels [N]) from scikit-learn's bundled digits."""
    from sklearn.datasets import load_digits
    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32)[:, None] / 16.0
    images = F.interpolate(images, size=32, mode="bilinear", align_corners=False)
    return images.expand(-1, 3, -1, -1).contiguous().to(device), \
        torch.tensor(data.target).to(device)


def train_both(steps, batch, width, lr, device, seed=0):
    """Loss per step of the unfused and the fused network, same init and batches."""
    import elutriton
    from perf.models import example_module
    torch.manual_seed(seed)
    images, labels = digits(device)
    model = example_module("elu_cifar").EluCifarNet(width, num_classes=10).to(device)
    fused, _ = elutriton.fuse(copy.deepcopy(model))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    losses = {}
    for name, net in (("unfused", model), ("fused", fused)):
        optimizer = torch.optim.Adam(net.parameters(), lr=lr)
        curve = []
        for step in range(steps):
            idx = order[(step * batch) % len(order):][:batch]
            loss = F.cross_entropy(net(images[idx]), labels[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            curve.append(loss.item())
        losses[name] = curve
    return losses


def plot(losses, path, title, caption):
    from perf.plots import finish_figure, plt
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for name, label, style in (("unfused", "PyTorch (unfused)", dict(lw=2.5, alpha=0.6)),
                               ("fused", "elutriton (fused)", dict(lw=1, ls="--"))):
        ax.plot(range(1, len(losses[name]) + 1), losses[name], label=label, **style)
    ax.set_ylabel("training loss (cross entropy)")
    ax.grid(alpha=0.3)
    finish_figure(fig, ax, path, title, caption, xlabel="training step")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="training steps per model")
    parser.add_argument("--batch", type=int, default=16, help="images per step")
    parser.add_argument("--width", type=float, default=0.05,
                        help="channel multiplier of the ELU-CIFAR network")
    parser.add_argument("--lr", type=float, default=0.01, help="Adam learning rate")
    parser.add_argument("--gpu", action="store_true",
                        help="run on the GPU (default: CPU, kernels under the interpreter)")
    parser.add_argument("--out", type=Path, default=None,
                        help="results folder (default: perf/results/no-gpu or perf/results/<gpu>)")
    args = parser.parse_args(argv)
    device = "cuda" if args.gpu else "cpu"
    losses = train_both(args.steps, args.batch, args.width, args.lr, device)
    gap = max(abs(a - b) for a, b in zip(losses["fused"], losses["unfused"]))
    where = environment(device)["gpu"] if device == "cuda" else None
    out = args.out or (device_dir(where) if where else NO_GPU)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "loss_curves_digits.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "unfused_loss", "fused_loss"])
        writer.writerows(zip(range(1, args.steps + 1), losses["unfused"], losses["fused"]))
    kernels = f"on {where}" if where else "Triton kernels under the interpreter, CPU"
    plot(losses, out / "loss_curves_digits.png",
         f"MEASURED: ELU-CIFAR network (width {args.width}) trained fused and unfused on "
         f"scikit-learn's digits ({kernels})",
         f"Same initial weights, same {args.batch}-image batches, Adam lr {args.lr}, "
         f"{args.steps} steps. Largest difference between the curves: {gap:.2e} (fp32). "
         "Images: 8x8 digits resized to 32x32, 3 channels (perf/loss_curves.py).")
    print(f"largest loss difference {gap:.3e}; loss curves -> {out}")
    return losses, gap


if __name__ == "__main__":
    main()
