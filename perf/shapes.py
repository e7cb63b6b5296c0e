"""Named shape sets for the benchmarks, the tuner and the traffic model, kept in one place."""
import dataclasses
from typing import Dict, List


@dataclasses.dataclass(frozen=True)
class ConvShape:
    name: str
    n: int
    c: int
    h: int
    w: int
    oc: int
    k: int
    stride: int = 1
    groups: int = 1

    @property
    def padding(self):
        return (self.k - 1) // 2

    @property
    def out_hw(self):
        from elutriton.ops.conv2d import conv_output_size
        return tuple(conv_output_size(size, self.k, self.stride, self.padding, 1)
                     for size in (self.h, self.w))


@dataclasses.dataclass(frozen=True)
class LinearShape:
    name: str
    m: int
    k: int
    n: int


@dataclasses.dataclass(frozen=True)
class ElementwiseShape:
    name: str
    rows: int
    channels: int


def elu_cifar_layers(batch: int = 128) -> List[ConvShape]:
    """The 11 conv layers of the ELU paper's CIFAR-100 net; 2x2 max-pool after each stack."""
    stacks = [[(192, 5)], [(192, 1), (240, 3)], [(240, 1), (260, 2)], [(260, 1), (280, 2)],
              [(280, 1), (300, 2)], [(300, 1)], [(100, 1)]]
    layers, c, hw = [], 3, 32
    for s, stack in enumerate(stacks):
        for i, (oc, k) in enumerate(stack):
            # The network pads k=2 layers 'same' (asymmetric); as a benchmark shape they get
            # symmetric padding (k - 1) // 2 = 0, so their output is one row/column smaller.
            layers.append(ConvShape(f"cifar_s{s + 1}_{i + 1}_{oc}x{k}", batch, c, hw, hw, oc, k))
            c = oc
        hw = max(1, (hw + 1) // 2)
    return layers


RESNET50 = [
    ConvShape("rn50_conv2_1x1_reduce", 32, 256, 56, 56, 64, 1),
    ConvShape("rn50_conv2_3x3", 32, 64, 56, 56, 64, 3),
    ConvShape("rn50_conv3_3x3", 32, 128, 28, 28, 128, 3),
    ConvShape("rn50_conv4_1x1_expand", 32, 256, 14, 14, 1024, 1),
    ConvShape("rn50_conv5_3x3", 32, 512, 7, 7, 512, 3),
]
DEPTHWISE = [ConvShape("depthwise_3x3", 32, 128, 56, 56, 128, 3, groups=128)]
MEMORY_BOUND_CONV = [ConvShape("small_c_large_hw", 32, 16, 128, 128, 16, 3)]
SELU_MLP = [LinearShape(f"selu_mlp_{m}x{k}x{n}", m, k, n)
            for m, k, n in [(256, 1024, 1024), (1024, 1024, 2048), (4096, 2048, 2048)]]
ELEMENTWISE = [ElementwiseShape(f"eltwise_{mb}MB", mb * 2**20 // (2 * 256), 256)
               for mb in (1, 16, 64, 256, 1024)]  # fp16 sizes, channels innermost

SHAPE_SETS: Dict[str, list] = {
    "elu_cifar": elu_cifar_layers(),
    "resnet50": RESNET50,
    "depthwise": DEPTHWISE,
    "memory_bound_conv": MEMORY_BOUND_CONV,
    "selu_mlp": SELU_MLP,
    "elementwise": ELEMENTWISE,
}

# Tiny shapes that exercise every code path under the interpreter.
TINY_SETS: Dict[str, list] = {
    "conv": [ConvShape("tiny_conv", 2, 8, 6, 6, 8, 3)],
    "linear": [LinearShape("tiny_linear", 16, 32, 16)],
    "elementwise": [ElementwiseShape("tiny_eltwise", 64, 32)],
}


def op_of(shape) -> str:
    return {ConvShape: "conv", LinearShape: "linear", ElementwiseShape: "bias_elu"}[type(shape)]
