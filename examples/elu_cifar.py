"""The ELU paper's CIFAR-100 network (Clevert et al. 2016, 11 conv layers) as a plain PyTorch
model, converted with elutriton.fuse, checked against the original, trained a few steps on
synthetic data, and on a GPU timed against eager PyTorch and torch.compile.

Stacks (layers x channels x kernel size): [1x192x5], [1x192x1, 1x240x3], [1x240x1, 1x260x2],
[1x260x1, 1x280x2], [1x280x1, 1x300x2], [1x300x1], [1x100x1]; ELU after every conv; 2x2
max-pool after each stack (ceil mode, so the 1x1 maps of the last stacks pass through).

    python examples/elu_cifar.py                 # full width, batch 100 (GPU recommended)
    python examples/elu_cifar.py --width 0.05 --batch 4 --steps 2   # tiny, CPU
"""
import argparse

import torch
from torch import nn

STACKS = [[(192, 5)], [(192, 1), (240, 3)], [(240, 1), (260, 2)], [(260, 1), (280, 2)],
          [(280, 1), (300, 2)], [(300, 1)], [(100, 1)]]
NUM_CLASSES = 100


class EluCifarNet(nn.Module):
    """11 conv layers in 7 stacks, ELU after each conv, max-pool after each stack."""

    def __init__(self, width: float = 1.0, num_classes: int = NUM_CLASSES):
        super().__init__()
        layers, in_channels = [], 3
        for s, stack in enumerate(STACKS):
            for channels, kernel in stack:
                last = s == len(STACKS) - 1
                out = num_classes if last else max(4, int(channels * width))
                layers += [nn.Conv2d(in_channels, out, kernel, padding="same"), nn.ELU()]
                in_channels = out
            layers.append(nn.MaxPool2d(2, ceil_mode=True))
        self.features = nn.Sequential(*layers)

    def forward(self, x):
        return self.features(x).flatten(1)


def train_steps(model, batches, lr=0.01):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    losses = []
    for x, target in batches:
        loss = nn.functional.cross_entropy(model(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Prints the fuse report, the largest output difference fused vs original, the "
               "training losses of the original (eager) and the fused network on the same "
               "random batches, and on a GPU the measured forward time of eager, torch.compile "
               "and elutriton.")
    parser.add_argument("--width", type=float, default=1.0,
                        help="channel multiplier of the paper's network (default %(default)s)")
    parser.add_argument("--batch", type=int, default=100,
                        help="images per step (default %(default)s)")
    parser.add_argument("--steps", type=int, default=3,
                        help="SGD steps to train each network (default %(default)s)")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    import elutriton

    torch.manual_seed(0)
    model = EluCifarNet(args.width).to(device)
    fused, report = elutriton.fuse(model)
    print(report)
    x = torch.randn(args.batch, 3, 32, 32, device=device)
    with torch.no_grad():
        err = (fused(x) - model(x)).abs().max().item()
    print(f"max |fused - original| = {err:.3e}")
    assert err < 1e-3, err

    batches = [(torch.randn(args.batch, 3, 32, 32, device=device),
                torch.randint(0, NUM_CLASSES, (args.batch,), device=device))
               for _ in range(args.steps)]
    reference = EluCifarNet(args.width).to(device)
    reference.load_state_dict(model.state_dict())
    ref_losses = train_steps(reference, batches)
    fused_losses = train_steps(fused, batches)
    print("losses (eager):", " ".join(f"{v:.4f}" for v in ref_losses))
    print("losses (fused):", " ".join(f"{v:.4f}" for v in fused_losses))

    if device == "cuda":
        from triton.testing import do_bench
        model.eval()
        fused.eval()
        compiled = torch.compile(model)
        with torch.no_grad():
            for name, fn in [("eager", model), ("torch.compile", compiled), ("elutriton", fused)]:
                ms = do_bench(lambda: fn(x))
                print(f"forward {name:14s} {ms:8.3f} ms (measured)")
    else:
        print("no GPU: timing skipped (interpreter/fallback timings mean nothing)")
    return ref_losses, fused_losses


if __name__ == "__main__":
    main()
