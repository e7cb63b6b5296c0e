"""elutriton.conv2d_bias_elu against float64 F.elu(F.conv2d(...)).

bf16 under the interpreter: Triton's interpreter computes bf16 ``tl.dot`` wrongly, so the
kernel upcasts bf16 operand tiles to fp32 before the dot there (UPCAST_OPERANDS). bf16 -> fp32
is exact, so this still checks the bf16 loads, tiling, masking, epilogue and bf16 store; the
bf16 tensor-core instruction itself is checked by the static kernel report (HMMA/HGMMA count)
and by the GPU-marked test below.
"""
import math

import pytest
import torch
import torch.nn.functional as F

import elutriton
from elutriton.plan import clear_plans
from tests.fallback import force_pytorch_fallback
from tests.reference import (DEVICE, DTYPES, GEMM_TOLERANCES, SELU,
                             assert_close, assert_grad_close, randn)

aten = torch.ops.aten

# Both paths of the per-shape choice (conftest.py: gemm_path)
pytestmark = pytest.mark.usefixtures("gemm_path")


def conv_inputs(n, c, h, w, oc, k, groups=1, dtype=torch.float32, bias=True):
    kh, kw = (k, k) if isinstance(k, int) else k
    x = randn((n, c, h, w), dtype)
    weight = (torch.randn(oc, c // groups, kh, kw, dtype=torch.float64, device=DEVICE)
              / math.sqrt(c // groups * kh * kw)).to(dtype)
    b = randn((oc,), dtype) * 0.5 if bias else None
    return x, weight, b


def ref_conv(x, weight, bias, stride=1, padding=0, dilation=1, groups=1, alpha=1.0, scale=1.0,
             input_scale=1.0):
    z = F.conv2d(x.double(), weight.double(), None if bias is None else bias.double(), stride,
                 padding, dilation, groups)
    return aten.elu(z, alpha, scale, input_scale)


CASES = [
    # (n, c, h, w, oc, k, stride, padding, dilation, groups)
    (2, 3, 9, 11, 8, 3, 1, 1, 1, 1),
    (1, 8, 7, 7, 16, 1, 1, 0, 1, 1),
    (2, 4, 13, 10, 6, 5, 2, 2, 1, 1),
    (1, 6, 9, 9, 6, 3, (1, 2), (2, 1), (2, 1), 1),
    (2, 8, 8, 9, 12, 3, 1, "same", 1, 2),
    (1, 5, 10, 7, 7, (2, 4), 1, "same", (2, 1), 1),  # asymmetric 'same' padding
    (1, 6, 11, 8, 4, 3, 1, "valid", 1, 1),
    (2, 8, 9, 9, 8, 3, 1, 1, 1, 8),     # depthwise
    (1, 4, 8, 8, 8, 3, 2, 1, 1, 4),     # depthwise, channel multiplier 2
    (3, 40, 5, 5, 33, 3, 1, 1, 1, 1),   # K spans several BLOCK_K steps, odd OC
    # >= 16 channels per group: the taps-outside loop (fewer: the flattened-K loop, FLAT_K)
    (2, 32, 7, 6, 20, 3, 2, 1, 1, 2),
    (1, 20, 6, 7, 9, (3, 2), 1, 1, (1, 2), 1),
]


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "sliced"])
def test_conv_parameter_space_fp32(case, layout):
    n, c, h, w, oc, k, stride, padding, dilation, groups = case
    x, weight, b = conv_inputs(n, c, h, w + (3 if layout == "sliced" else 0), oc, k, groups)
    if layout == "channels_last":
        x = x.to(memory_format=torch.channels_last)
    if layout == "sliced":
        x = x[..., 1:-2]
    y = elutriton.conv2d_bias_elu(x, weight, b, stride, padding, dilation, groups)
    expected = ref_conv(x, weight, b, stride, padding, dilation, groups)
    assert y.shape == expected.shape
    assert_close(y, expected, tolerances=GEMM_TOLERANCES)
    assert y.stride() == F.conv2d(x, weight, b, stride, padding, dilation, groups).stride()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("params", [(1.0, 1.0, 1.0), (SELU["alpha"], SELU["scale"], 1.0),
                                    (0.5, 1.0, 2.0)], ids=["elu", "selu", "celu"])
def test_conv_dtypes_and_activations(dtype, params):
    x, weight, b = conv_inputs(2, 16, 7, 9, 24, 3, dtype=dtype)
    x = x.to(memory_format=torch.channels_last)
    y = elutriton.conv2d_bias_elu(x, weight, b, padding=1, alpha=params[0], scale=params[1],
                                  input_scale=params[2])
    assert y.dtype == dtype and y.is_contiguous(memory_format=torch.channels_last)
    assert_close(y, ref_conv(x, weight, b, padding=1, alpha=params[0], scale=params[1],
                             input_scale=params[2]), tolerances=GEMM_TOLERANCES)


def test_conv_bias_none_unbatched_and_weight_channels_last():
    x, weight, _ = conv_inputs(1, 5, 8, 6, 7, 3, bias=False)
    y = elutriton.conv2d_bias_elu(x[0], weight, None, padding=1)
    assert y.shape == (7, 8, 6)
    assert_close(y, ref_conv(x, weight, None, padding=1)[0], tolerances=GEMM_TOLERANCES)
    wl = weight.to(memory_format=torch.channels_last)
    y = elutriton.conv2d_bias_elu(x, wl, None)
    assert y.stride() == F.conv2d(x, wl).stride()
    assert_close(y, ref_conv(x, weight, None), tolerances=GEMM_TOLERANCES)


def test_conv_special_values_propagate():
    x, weight, b = conv_inputs(1, 4, 5, 5, 4, 1)
    x[0, 0, 0, 0] = float("nan")
    x[0, 1, 1, 1] = float("inf")
    y = elutriton.conv2d_bias_elu(x, weight, b)
    assert_close(y, ref_conv(x, weight, b), tolerances=GEMM_TOLERANCES)


def test_conv_tf32_flags_untouched():
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    x, weight, b = conv_inputs(1, 4, 5, 5, 4, 3)
    elutriton.conv2d_bias_elu(x, weight, b)
    elutriton.linear_bias_elu(randn((3, 4), torch.float32), randn((2, 4), torch.float32))
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before


# --------------------------------------------------------------------------- depthwise
DEPTHWISE_CASES = [
    # (n, c, h, w, multiplier, k, stride, padding, dilation)
    (2, 40, 7, 9, 1, 3, 1, 1, 1),         # C spans several channel tiles, odd sizes
    (1, 6, 11, 8, 2, (3, 5), (2, 1), (1, 2), (1, 2)),
    (3, 5, 4, 4, 3, 1, 1, 0, 1),          # 1x1 depthwise, multiplier 3
    (1, 4, 6, 6, 1, 3, 1, "same", 2),
]


@pytest.mark.fused_kernel
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("case", DEPTHWISE_CASES, ids=[str(i) for i in range(4)])
def test_depthwise_kernel_matches_reference(case, dtype, monkeypatch):
    import elutriton.ops.conv2d as conv_ops
    n, c, h, w, multiplier, k, stride, padding, dilation = case
    x, weight, b = conv_inputs(n, c, h, w, c * multiplier, k, groups=c, dtype=dtype,
                               bias=multiplier != 3)
    x = x.to(memory_format=torch.channels_last) if multiplier == 1 else x
    calls = []
    real = conv_ops.plan_depthwise_conv2d_bias_elu
    monkeypatch.setattr(conv_ops, "plan_depthwise_conv2d_bias_elu",
                        lambda *a, **kw: calls.append(1) or real(*a, **kw))
    clear_plans()  # the depthwise kernel must be planned (once) for this call
    y = elutriton.conv2d_bias_elu(x, weight, b, stride, padding, dilation, c, *SELU.values())
    assert calls == [1]
    expected = ref_conv(x, weight, b, stride, padding, dilation, c, *SELU.values())
    assert_close(y, expected, tolerances=GEMM_TOLERANCES)
    # Layout follows torch's rule (channels_last in -> channels_last out). torch's own fp64
    # CUDA convolution (no cuDNN path) returns a contiguous tensor there instead, so the
    # strides are compared with F.conv2d's everywhere but fp64 on a GPU.
    if not (dtype == torch.float64 and y.is_cuda):
        assert y.stride() == F.conv2d(x, weight, b, stride, padding, dilation, c).stride()
    else:
        assert y.is_contiguous(memory_format=elutriton.ops.conv2d.conv_output_format(x, weight))


# --------------------------------------------------------------------------- autograd
@pytest.mark.records_grad
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", [CASES[0], CASES[4], CASES[7]], ids=["plain", "grouped", "dw"])
def test_conv_gradients(dtype, case):
    n, c, h, w, oc, k, stride, padding, dilation, groups = case
    x, weight, b = conv_inputs(n, c, h, w, oc, k, groups, dtype=dtype)
    x = x.to(memory_format=torch.channels_last)
    leaves = [t.detach().requires_grad_() for t in (x, weight, b)]
    y = elutriton.conv2d_bias_elu(*leaves, stride, padding, dilation, groups)
    grad_y = randn(y.shape, dtype) * 0.5
    grads = torch.autograd.grad(y, leaves, grad_y)
    ref_leaves = [t.detach().double().requires_grad_() for t in (x, weight, b)]
    ref = ref_conv(*ref_leaves, stride, padding, dilation, groups)
    ref_grads = torch.autograd.grad(ref, ref_leaves, grad_y.double())
    pixels = y.shape[0] * y.shape[2] * y.shape[3]
    taps = weight.shape[2] * weight.shape[3]
    # grad_x sums OC/groups * taps terms (fewer where stride skips), grad_w and grad_b N*OH*OW
    for got, want, n_terms in zip(grads, ref_grads, (oc // groups * taps, pixels, pixels)):
        assert_grad_close(got, want, dtype, n_terms)


@pytest.mark.records_grad
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_conv_gradients_unbatched_channels_last_grouped(dtype):
    # An unbatched x sliced from a channels_last batch, a channels_last weight, groups 3: torch's
    # CPU convolution backward (torch 2.13.0, float16 and float64) returns a wrong weight
    # gradient for x.unsqueeze(0)'s batch stride; the op's batched view avoids it
    # (elutriton/_layout.batched_view). The reference runs on contiguous float64 copies, where
    # torch is right. CELU(2)'s parameters: a derivative continuous at 0, so a 16-bit z rounded
    # across 0 does not move the gradient by a jump.
    x, weight, b = conv_inputs(2, 18, 4, 8, 15, (2, 3), groups=3, dtype=dtype)
    x = x.to(memory_format=torch.channels_last)[1]
    weight = weight.to(memory_format=torch.channels_last)
    leaves = [t.detach().requires_grad_() for t in (x, weight, b)]
    y = elutriton.conv2d_bias_elu(*leaves, 1, 0, 1, 3, 2.0, 1.0, 0.5)
    grad_y = randn(y.shape, dtype) * 0.5
    grads = torch.autograd.grad(y, leaves, grad_y)
    ref_leaves = [t.detach().double().contiguous().requires_grad_() for t in (x, weight, b)]
    ref = ref_conv(*ref_leaves, 1, 0, 1, 3, 2.0, 1.0, 0.5)
    assert_close(y, ref, tolerances=GEMM_TOLERANCES)
    ref_grads = torch.autograd.grad(ref, ref_leaves, grad_y.double())
    pixels = y.shape[1] * y.shape[2]
    for got, want, n_terms in zip(grads, ref_grads, (15 // 3 * 6, pixels, pixels)):
        assert_grad_close(got, want, dtype, n_terms)


@pytest.mark.records_grad
@pytest.mark.parametrize("device_kind", ["kernels", "fallback"])
@pytest.mark.parametrize("case", [((2, 5, 3, 1), (3, 5, 3, 1), 2, 1, 2, 1),
                                  ((3, 4, 2, 1), (8, 1, 2, 1), 2, 1, (1, 2), 4)],
                         ids=["dilation_2", "dilation_1_2_grouped"])
def test_conv_dilation_of_a_one_tap_axis(case, device_kind, monkeypatch):
    """A dilation along an axis where the kernel has one tap changes nothing; the op drops
    it. torch's CPU convolution (torch 2.13.0, float32 and bfloat16) crashes the process
    for these (a channels_last x one column wide, stride 2, padding 1, a bias), which the
    PyTorch fallback and the composite path ran as given (docs/torch_defects.md)."""
    if device_kind == "fallback":
        force_pytorch_fallback(monkeypatch)
    x_shape, w_shape, stride, padding, dilation, groups = case
    x, weight, b = conv_inputs(*x_shape, w_shape[0], w_shape[2:], groups=groups)
    x = x.contiguous(memory_format=torch.channels_last)
    leaves = [t.detach().requires_grad_() for t in (x, weight, b)]
    y = elutriton.conv2d_bias_elu(*leaves, stride, padding, dilation, groups, 0.7)
    ref_leaves = [t.detach().double().contiguous().requires_grad_() for t in (x, weight, b)]
    ref = ref_conv(*ref_leaves, stride, padding, dilation, groups, 0.7)
    assert_close(y, ref, tolerances=GEMM_TOLERANCES)
    grad_y = randn(y.shape, torch.float32)
    pixels = y.shape[0] * y.shape[2] * y.shape[3]
    for got, want, n_terms in zip(torch.autograd.grad(y, leaves, grad_y),
                                  torch.autograd.grad(ref, ref_leaves, grad_y.double()),
                                  (w_shape[0] // groups * w_shape[2], pixels, pixels)):
        assert_grad_close(got, want, torch.float32, n_terms)


# Convolutions where torch's own CPU bfloat16 convolution is wrong (torch 2.13.0,
# docs/torch_defects.md): (x shape, weight shape, stride, padding, groups). The forward of the
# first (depthwise, two outputs per channel, stride (1, 2), one output column) is off in most
# elements; the weight gradient of the second (one input column) is off by up to 1e8.
TORCH_BF16_DEFECT_CASES = [((2, 8, 6, 4), (16, 1, 1, 4), (1, 2), 0, 8),
                           ((1, 15, 9, 1), (9, 15, 4, 2), 2, (2, 1), 1)]


@pytest.mark.fused_kernel
@pytest.mark.records_grad
@pytest.mark.parametrize("case", TORCH_BF16_DEFECT_CASES, ids=["forward", "weight_grad"])
def test_fused_conv_right_where_torch_cpu_bfloat16_is_wrong(case, monkeypatch):
    """The fused kernel and elutriton's Triton backward (forced: the default backward for
    these shapes is torch's convolution backward) match float64 torch on channels_last
    bfloat16 inputs where torch's own CPU bfloat16 convolution (what the library, composite
    and fallback paths and the cuDNN-path backward run) is wrong: a randomized comparison found
    both. (The grouped case's backward is torch's: the Triton backward kernels take groups 1.)"""
    monkeypatch.setenv("ELUTRITON_BACKWARD", "triton")
    x_shape, w_shape, stride, padding, groups = case
    x = randn(x_shape, torch.bfloat16).contiguous(memory_format=torch.channels_last)
    weight = (randn(w_shape, torch.bfloat16) / math.sqrt(math.prod(w_shape[1:]))).to(
        torch.bfloat16)
    b = randn((w_shape[0],), torch.bfloat16) * 0.5
    leaves = [t.detach().requires_grad_() for t in (x, weight, b)]
    y = elutriton.conv2d_bias_elu(*leaves, stride, padding, 1, groups)
    ref_leaves = [t.detach().double().contiguous().requires_grad_() for t in (x, weight, b)]
    ref = ref_conv(*ref_leaves, stride, padding, 1, groups)
    assert_close(y, ref, tolerances=GEMM_TOLERANCES)
    grad_y = randn(y.shape, torch.bfloat16) * 0.5
    grads = torch.autograd.grad(y, leaves, grad_y)
    ref_grads = torch.autograd.grad(ref, ref_leaves, grad_y.double())
    pixels = y.shape[0] * y.shape[2] * y.shape[3]
    n_terms = (w_shape[0] // groups * w_shape[2] * w_shape[3], pixels, pixels)
    for got, want, terms in zip(grads, ref_grads, n_terms):
        assert_grad_close(got, want, torch.bfloat16, terms)


@pytest.mark.records_grad
@pytest.mark.parametrize("alpha", [1.0, -0.7], ids=["from_result", "from_input"])
def test_conv_gradcheck_float64(alpha):
    x, weight, b = conv_inputs(1, 2, 5, 4, 4, 3, groups=2, dtype=torch.float64)
    inputs = [t.requires_grad_() for t in (x, weight, b)]
    assert torch.autograd.gradcheck(
        lambda x, w, b: elutriton.conv2d_bias_elu(x, w, b, (2, 1), 1, (1, 2), 2, alpha), inputs)


@pytest.mark.records_grad
@pytest.mark.parametrize("device_kind", ["kernels", "fallback"])
def test_conv_opcheck_and_compile(device_kind, monkeypatch):
    """The custom op (what torch.compile traces) passes opcheck and compiles, with the kernels
    and on the PyTorch fallback (a device without them: the op's implementation is torch's
    composite, laid out as the fake kernel says)."""
    if device_kind == "fallback":
        force_pytorch_fallback(monkeypatch)
    x, weight, b = conv_inputs(1, 4, 6, 5, 6, 3)
    for args in [(x, weight, b, [1, 1], [1, 1], [1, 1], 1, 1.0, 1.0, 1.0),
                 (x.to(memory_format=torch.channels_last), weight, None, [2, 1], [0, 1], [1, 1],
                  1, -0.5, 1.0, 1.0)]:
        args = tuple(t.requires_grad_() if isinstance(t, torch.Tensor) else t for t in args)
        torch.library.opcheck(torch.ops.elutriton.conv2d_bias_elu.default, args)

    def layer(x, w, b):
        return elutriton.conv2d_bias_elu(x, w, b, padding="same", alpha=0.7, scale=1.2) * 2

    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    leaves = [t.detach().requires_grad_() for t in (x, weight, b)]
    y = compiled(*leaves)
    assert_close(y, ref_conv(x, weight, b, padding="same", alpha=0.7, scale=1.2) * 2,
                 tolerances=GEMM_TOLERANCES)
    y.sum().backward()
    assert all(t.grad is not None for t in leaves)


# --------------------------------------------------------------------------- bad input
def test_conv_errors_match_torch_conditions():
    x, weight, b = conv_inputs(1, 4, 6, 6, 6, 3)
    conv = elutriton.conv2d_bias_elu
    cases = [
        ((x[:, :3], weight, b), {}, ValueError, "channels"),
        ((x, weight, b), {"groups": 4}, ValueError, "divisible"),
        ((x, weight[:, :2], b), {"groups": 3}, ValueError, "channels"),
        ((x, weight[0], b), {}, ValueError, "4-D `weight`"),
        ((x[0, 0], weight, b), {}, ValueError, "3-D"),
        ((x, weight, b[:5]), {}, ValueError, "`bias` of length"),
        ((x, weight, b), {"stride": 0}, ValueError, "`stride` must be positive"),
        ((x, weight, b), {"padding": -1}, ValueError, "`padding` must be non-negative"),
        ((x, weight, b), {"dilation": (1, 0)}, ValueError, "`dilation` must be positive"),
        ((x, weight, b), {"stride": 2, "padding": "same"}, ValueError, "strided"),
        ((x, weight, b), {"padding": "full"}, ValueError, "'same' or 'valid'"),
        ((x, weight, b), {"dilation": 4}, ValueError, "empty"),
        ((x, weight.double(), b), {}, TypeError, "`weight`.*dtype"),
        ((x, weight, b.double()), {}, TypeError, "`bias`.*dtype"),
        # (F.conv2d lets a mismatched bias through with string padding: docs/torch_defects.md)
        ((x, weight, b.double()), {"padding": "same"}, TypeError, "`bias`.*dtype"),
        ((x, weight, b.half()), {"padding": "valid"}, TypeError, "`bias`.*dtype"),
        ((x.int(), weight, b), {}, TypeError, "`input`.*floating"),
        ((x, weight, torch.randn(6, device="meta")), {}, ValueError, "`bias`.*device"),
        ((x, weight, b), {"stride": (1, 2, 3)}, TypeError, "`stride`"),
        ((x, weight, b), {"groups": 0}, ValueError, "`groups`"),
    ]
    for args, kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            conv(*args, **kwargs)
        if error is ValueError and "device" not in match:
            # torch refuses the same input (our message is clearer, the condition is the same)
            with pytest.raises((RuntimeError, ValueError)):
                F.conv2d(*args, **kwargs)
    # no input channels: F.conv2d returns an output with 0 channels whatever the weight (no
    # ELU of the bias); elutriton refuses it (before, torch's broadcast error from the bias)
    for groups in (1, 2):
        with pytest.raises(ValueError, match="`input` with at least one channel"):
            conv(x[:, :0], weight[:, :0], b, groups=groups)


def test_conv_one_element_argument_lists_expand_like_torch():
    # F.conv2d takes a one-element stride/padding/dilation for both dims (torch's IntArrayRef
    # expansion); elutriton raised TypeError for them
    x, weight, b = conv_inputs(2, 4, 9, 8, 6, 3)
    for kwargs in ({"stride": (2,)}, {"padding": [1]}, {"dilation": (2,), "padding": (1,)},
                   {"stride": [3], "padding": 2, "dilation": [1]}):
        y = elutriton.conv2d_bias_elu(x, weight, b, **kwargs)
        assert_close(y, ref_conv(x, weight, b, **kwargs), tolerances=GEMM_TOLERANCES)
    with pytest.raises(TypeError, match="`padding`"):  # what stays refused: no element
        elutriton.conv2d_bias_elu(x, weight, b, padding=())
    with pytest.raises(TypeError, match="`stride`"):  # (F.conv2d refuses a bool too)
        elutriton.conv2d_bias_elu(x, weight, b, stride=(True,))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_conv_tensor_cores_on_gpu(dtype):
    x, weight, b = conv_inputs(4, 64, 16, 16, 64, 3, dtype=dtype)
    x, weight, b = x.cuda().to(memory_format=torch.channels_last), weight.cuda(), b.cuda()
    y = elutriton.conv2d_bias_elu(x, weight, b, padding=1)
    assert_close(y.cpu(), ref_conv(x.cpu(), weight.cpu(), b.cpu(), padding=1),
                 tolerances=GEMM_TOLERANCES)


@pytest.mark.fused_kernel
def test_tf32_follows_torch_flags_without_changing_them(monkeypatch):
    from elutriton.kernels import conv2d as conv_kernels
    assert conv_kernels.dot_precision(torch.float32, True) == "tf32"
    assert conv_kernels.dot_precision(torch.float32, False) == "ieee"
    assert conv_kernels.dot_precision(torch.float16, False) is None
    seen = []
    real = conv_kernels.dot_precision
    monkeypatch.setattr(conv_kernels, "dot_precision",
                        lambda dtype, allow: seen.append(allow) or real(dtype, allow))
    x, weight, b = conv_inputs(1, 4, 5, 5, 4, 3)
    for conv_flag, matmul_flag in [(True, False), (False, True)]:
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", conv_flag)
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", matmul_flag)
        elutriton.conv2d_bias_elu(x, weight, b)
        elutriton.linear_bias_elu(x[0, 0], torch.randn(4, 5, device=x.device))
        assert seen[-2:] == [conv_flag, matmul_flag]
        assert torch.backends.cudnn.allow_tf32 == conv_flag


@pytest.mark.fused_kernel
@pytest.mark.parametrize("kind", ["gemm", "flat_k", "depthwise", "linear"])
def test_int64_index_path_matches(kind, monkeypatch):
    """Force INT64_INDEX on small tensors: same values, so the promotion is sound."""
    from elutriton.kernels import conv2d as conv_kernels
    from elutriton.kernels import depthwise_conv2d as depthwise_kernels
    forced = []
    for module in (conv_kernels, depthwise_kernels):
        monkeypatch.setattr(module, "needs_int64_index", lambda *a: forced.append(1) or True)
    if kind == "linear":
        x, w, b = randn((5, 24), torch.float32), randn((7, 24), torch.float32) / 5, None
        y = elutriton.linear_bias_elu(x, w, b)
        expected = aten.elu(F.linear(x.double(), w.double()), 1.0, 1.0, 1.0)
    else:
        c, groups = {"gemm": (20, 1), "flat_k": (3, 1), "depthwise": (6, 6)}[kind]
        x, w, b = conv_inputs(2, c, 7, 5, 6, 3, groups=groups)
        y = elutriton.conv2d_bias_elu(x, w, b, 1, 1, 1, groups)
        expected = ref_conv(x, w, b, 1, 1, 1, groups)
    assert forced  # the kernel was planned with the int64 path
    assert_close(y, expected, tolerances=GEMM_TOLERANCES)


def test_pytorch_fallback_takes_each_calls_own_arguments(monkeypatch):
    """The fallback's plan fixes the resolved stride, padding, dilation, groups and ELU
    parameters (``reference.fixed_conv2d_bias_elu``): calls on the same tensors that differ
    in any of them, or in how one is spelled, each get torch's own result (bit for bit), in
    torch's layout, on a cold plan and a warm one."""
    from elutriton.ops import conv2d as conv_ops
    monkeypatch.setattr(conv_ops, "use_triton", lambda tensor: False)
    clear_plans()
    x = randn((2, 4, 9, 8), torch.float32)
    w = randn((4, 4, 3, 3), torch.float32) / 4
    w_grouped = randn((4, 2, 3, 3), torch.float32) / 3
    w_even = randn((4, 4, 2, 3), torch.float32) / 4  # 'same' pads one more row below
    b = randn((4,), torch.float32)
    calls = [  # (weight, stride, padding, dilation, groups, alpha, scale, input_scale)
        (w_even, 1, "same", 1, 1, 1.0, 1.0, 1.0), (w_even, 1, "same", (3, 2), 1, 0.5, 1.0, 1.0),
        (w, 1, 1, 1, 1, 1.0, 1.0, 1.0), (w, (1, 2), 1, 1, 1, 1.0, 1.0, 1.0),
        (w, 2, (0, 1), 1, 1, 1.0, 1.0, 1.0), (w, 1, 1, (2, 1), 1, 1.0, 1.0, 1.0),
        (w, 1, "same", 2, 1, 1.0, 1.0, 1.0), (w, 1, "valid", 1, 1, 1.0, 1.0, 1.0),
        (w, 1, [1, 1], 1, 1, 1.0, 1.0, 1.0), (w_grouped, 1, 1, 1, 2, 1.0, 1.0, 1.0),
        (w, 1, 1, 1, 1, 0.5, 1.0, 1.0), (w, 1, 1, 1, 1, *SELU.values()),
        (w, 1, 1, 1, 1, 2.0, 1.0, 0.5)]
    for layout in (torch.contiguous_format, torch.channels_last):
        x_in = x.contiguous(memory_format=layout)
        for _ in range(2):
            for weight, stride, padding, dilation, groups, *params in calls:
                y = elutriton.conv2d_bias_elu(x_in, weight, b, stride, padding, dilation,
                                              groups, *params)
                expected = aten.elu(F.conv2d(x_in, weight, b, stride, padding, dilation, groups),
                                    *params)
                torch.testing.assert_close(y, expected, atol=0, rtol=0)
                assert y.stride() == expected.stride()


def test_pytorch_fallback_lays_out_its_output_as_the_kernels(monkeypatch):
    """Where torch's convolution returns another layout than the kernels' rule (channels_last
    when x or the weight is), the fallback returns a copy in the kernels' layout, equal to
    torch's values: the public call, and the custom op (what torch.compile runs), whose fake
    kernel promises that layout."""
    from elutriton.ops import conv2d as conv_ops
    monkeypatch.setattr(conv_ops, "use_triton", lambda tensor: False)
    clear_plans()
    conv2d = F.conv2d
    monkeypatch.setattr(F, "conv2d", lambda *args: conv2d(*args).contiguous())
    x = randn((2, 3, 5, 6), torch.float32).to(memory_format=torch.channels_last)
    w, b = randn((4, 3, 3, 3), torch.float32) / 3, randn((4,), torch.float32)
    custom_op = torch.ops.elutriton.conv2d_bias_elu  # (its implementation: reference.in_layout)
    for _ in range(2):
        for y in (elutriton.conv2d_bias_elu(x, w, b, padding=1, alpha=0.5),
                  custom_op(x, w, b, [1, 1], [1, 1], [1, 1], 1, 0.5, 1.0, 1.0)):
            assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
            torch.testing.assert_close(y, F.elu(conv2d(x, w, b, padding=1), 0.5), atol=0,
                                       rtol=0)


@pytest.mark.parametrize("padding", [1, "same"], ids=["int", "same_even_kernel"])
def test_pytorch_fallback_is_torchs_own_autograd(padding, monkeypatch):
    """CPU without TRITON_INTERPRET: torch's composite, differentiated by torch (no Python
    autograd Function), also where 'same' padding of an even kernel needs a padded copy (its
    plan is looked up per call)."""
    from elutriton.ops import conv2d as conv_ops
    monkeypatch.setattr(conv_ops, "use_triton", lambda tensor: False)
    clear_plans()
    x = randn((2, 3, 7, 6), torch.float32).to(memory_format=torch.channels_last)
    w = (randn((5, 3, 2, 2), torch.float32) / 3).requires_grad_()
    b = randn((5,), torch.float32).requires_grad_()
    for _ in range(2):  # a warm plan too
        y = elutriton.conv2d_bias_elu(x, w, b, padding=padding, alpha=0.7)
        assert y.grad_fn.name().startswith("EluBackward")
    expected = F.elu(F.conv2d(x, w, b, padding=padding), 0.7)
    torch.testing.assert_close(y, expected, atol=0, rtol=0)
    assert y.stride() == expected.stride()
    # a warm call is torch's convolution on x as given: 'same' padded there, not by a copy
    # made here (F.pad) and a plan looked up for it (~10 us per call on CPU)
    with monkeypatch.context() as patch:
        patch.setattr(F, "pad", lambda *args, **kwargs: pytest.fail("padded per call"))
        patch.setattr(conv_ops, "_plan_for", lambda *args: pytest.fail("planned per call"))
        torch.testing.assert_close(elutriton.conv2d_bias_elu(x, w, b, padding=padding,
                                                             alpha=0.7), expected, atol=0, rtol=0)
    grad_y = randn(y.shape, torch.float32)
    for got, want in zip(torch.autograd.grad(y, (w, b), grad_y),
                         torch.autograd.grad(expected, (w, b), grad_y)):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
