"""A self-normalizing MLP (Klambauer et al. 2017): Linear + SELU blocks, fused with
elutriton.fuse, checked against the original and trained a few steps on synthetic data.

    python examples/selu_mlp.py [--width 1024] [--depth 4] [--batch 256]
"""
import argparse

import torch
from torch import nn


def selu_mlp(in_features=784, width=1024, depth=4, classes=10):
    layers, features = [], in_features
    for _ in range(depth):
        layers += [nn.Linear(features, width), nn.SELU()]
        features = width
    layers.append(nn.Linear(features, classes))
    return nn.Sequential(*layers)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Prints the fuse report, the largest output difference fused vs original, and "
               "the fused model's training losses, one per SGD step on random 784-feature "
               "inputs and labels.")
    parser.add_argument("--width", type=int, default=1024,
                        help="features of each hidden layer (default %(default)s)")
    parser.add_argument("--depth", type=int, default=4,
                        help="hidden Linear + SELU layers (default %(default)s)")
    parser.add_argument("--batch", type=int, default=256,
                        help="samples per step (default %(default)s)")
    parser.add_argument("--steps", type=int, default=3,
                        help="SGD steps to train (default %(default)s)")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    import elutriton

    torch.manual_seed(0)
    model = selu_mlp(width=args.width, depth=args.depth).to(device)
    fused, report = elutriton.fuse(model)
    print(report)
    x = torch.randn(args.batch, 784, device=device)
    with torch.no_grad():
        err = (fused(x) - model(x)).abs().max().item()
    print(f"max |fused - original| = {err:.3e}")
    assert err < 1e-3, err
    optimizer = torch.optim.SGD(fused.parameters(), lr=0.01)
    losses = []
    for _ in range(args.steps):
        target = torch.randint(0, 10, (args.batch,), device=device)
        loss = nn.functional.cross_entropy(fused(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    print(f"training losses of the fused SELU MLP ({args.depth} x {args.width}, SGD, "
          f"{args.steps} steps):", " ".join(f"{v:.4f}" for v in losses))
    return losses


if __name__ == "__main__":
    main()
