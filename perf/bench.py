"""`make bench`: bias+ELU demo. On a CUDA GPU it times elutriton against eager PyTorch; with
no GPU it runs the real kernels under Triton's interpreter on small shapes and checks them
against a float64 reference (interpreter timings mean nothing and are not printed)."""
import argparse
import os
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes-mb", type=float, nargs="*", default=[1, 16, 64, 256])
    args = parser.parse_args(argv)
    import torch
    if not torch.cuda.is_available():
        os.environ["TRITON_INTERPRET"] = "1"
    import elutriton
    import torch.nn.functional as F

    if not torch.cuda.is_available():
        print("no CUDA GPU: correctness pass of the Triton kernels under the interpreter")
        for shape in [(8, 16, 17, 19), (257, 129)]:
            x = torch.randn(shape)
            b = torch.randn(shape[1])
            y = elutriton.bias_elu(x, b, dim=1)
            ref = F.elu(x.double() + b.double().view([1, -1] + [1] * (x.dim() - 2)))
            err = (y.double() - ref).abs().max().item()
            print(f"  bias_elu {tuple(shape)} float32: max abs error {err:.2e}")
            if err > 1e-5:
                sys.exit(f"error too large: {err}")
        return
    from triton.testing import do_bench
    for mb in args.sizes_mb:
        n = int(mb * 2**20 / 2)
        x = torch.randn(n // 256, 256, device="cuda", dtype=torch.float16)
        b = torch.randn(256, device="cuda", dtype=torch.float16)
        bytes_moved = 2 * x.numel() * x.element_size()
        for name, fn in [("elutriton", lambda: elutriton.bias_elu(x, b, dim=-1)),
                         ("eager", lambda: F.elu(x + b))]:
            ms = do_bench(fn)
            print(f"{mb:8.1f} MB {name:10s} {ms * 1e3:9.1f} us {bytes_moved / ms / 1e6:8.1f} GB/s")


if __name__ == "__main__":
    main()
