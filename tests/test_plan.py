"""Launch plans (elutriton/plan.py): a warm call must give what a cold call gives, and every
input that differs in something that matters must miss the cache (a wrong hit would be a
silently wrong result)."""
import math
import sys

import pytest
import torch
import torch.nn.functional as F

import elutriton
from elutriton.kernels import bias_elu as bias_elu_kernels
from elutriton.kernels import conv2d as conv_kernels
from elutriton.ops import bias_elu as bias_elu_ops
from elutriton.ops import conv2d as conv_ops
from elutriton.ops import linear as linear_ops
from elutriton.kernels.launch import FixedLaunch
from elutriton.plan import PlanCache, clear_plans, get_plan
from tests.fallback import force_pytorch_fallback
from tests.reference import (DEVICE, GEMM_TOLERANCES, GRAD_TOLERANCES, assert_close, randn,
                             ref_bias_elu, ref_bias_elu_grads)


def ref_conv(x, w, b, padding=1, alpha=1.0):
    return torch.ops.aten.elu(F.conv2d(x.double(), w.double(), b.double(), 1, padding), alpha,
                              1.0, 1.0)


def conv_args(dtype=torch.float32, n=2, c=5, hw=6, oc=7):
    x = randn((n, c, hw, hw), dtype)
    w = (randn((oc, c, 3, 3), dtype) / (3 * math.sqrt(c))).to(dtype)
    return x, w, randn((oc,), dtype) * 0.5


def test_warm_call_hits_and_matches_cold_call():
    x, w, b = conv_args()
    cache = conv_ops._CALL_PLANS
    first = elutriton.conv2d_bias_elu(x, w, b, padding=1)
    misses = cache.misses
    for _ in range(3):
        again = elutriton.conv2d_bias_elu(x, w, b, padding=1)
        assert torch.equal(again, first)
    assert cache.misses == misses and cache.hits >= 3
    assert_close(first, ref_conv(x, w, b), tolerances=GEMM_TOLERANCES)


@pytest.mark.parametrize("layout", ["channels_last", "sliced", "transposed_hw"])
def test_same_shape_other_strides_miss(layout):
    x, w, b = conv_args(hw=7)
    elutriton.conv2d_bias_elu(x, w, b, padding=1)  # warm the contiguous plan
    misses = conv_ops._CALL_PLANS.misses
    if layout == "channels_last":
        other = x.to(memory_format=torch.channels_last)
    elif layout == "sliced":
        other = randn((2, 5, 7, 14), torch.float32)[..., ::2]
    else:
        other = randn((2, 5, 7, 7), torch.float32).transpose(2, 3)
    assert other.shape == x.shape and other.stride() != x.stride()
    y = elutriton.conv2d_bias_elu(other, w, b, padding=1)
    assert conv_ops._CALL_PLANS.misses == misses + 1
    assert_close(y, ref_conv(other, w, b), tolerances=GEMM_TOLERANCES)
    assert y.stride() == F.conv2d(other, w, b, padding=1).stride()


def test_the_custom_ops_kernel_plan_misses_for_other_conv_arguments(monkeypatch):
    """The path torch.compile's graphs call (``torch.ops.elutriton.conv2d_bias_elu``) keys its
    kernel plan inline: each argument that changes the kernel must miss it."""
    x, w, b = conv_args(hw=7)
    op = torch.ops.elutriton.conv2d_bias_elu.default
    cache = conv_ops._KERNEL_PLANS

    def check(stride, padding, dilation, x=x, w=w, b=b, groups=1):
        misses = cache.misses
        y = op(x, w, b, stride, padding, dilation, groups, 1.0, 1.0, 1.0)
        assert cache.misses == misses + 1
        expected = torch.ops.aten.elu(F.conv2d(x.double(), w.double(), b.double(), stride,
                                               padding, dilation, groups), 1.0, 1.0, 1.0)
        assert_close(y, expected, tolerances=GEMM_TOLERANCES)
        misses = cache.misses
        op(x, w, b, stride, padding, dilation, groups, 1.0, 1.0, 1.0)  # the warm call hits
        assert cache.misses == misses
    check([1, 1], [1, 1], [1, 1])
    check([2, 1], [1, 1], [1, 1])
    check([2, 1], [0, 1], [1, 1])
    check([2, 1], [0, 1], [2, 1])
    check([2, 1], [0, 1], [2, 1], x=x.to(memory_format=torch.channels_last))
    check([1, 1], [1, 1], [1, 1], x=x[:, :4], w=w[:6, :2].contiguous(), b=b[:6], groups=2)
    if DEVICE == "cuda":
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
        misses = cache.misses
        op(x, w, b, [1, 1], [1, 1], [1, 1], 1, 1.0, 1.0, 1.0)
        assert cache.misses == misses + 1


def test_other_dtype_and_other_parameters_miss():
    x, w, b = conv_args()
    y32 = elutriton.conv2d_bias_elu(x, w, b, padding=1, alpha=0.5)
    assert_close(y32, ref_conv(x, w, b, alpha=0.5), tolerances=GEMM_TOLERANCES)
    x64, w64, b64 = x.double(), w.double(), b.double()
    y64 = elutriton.conv2d_bias_elu(x64, w64, b64, padding=1, alpha=0.5)
    assert y64.dtype == torch.float64
    assert_close(y64, ref_conv(x, w, b, alpha=0.5), tolerances=GEMM_TOLERANCES)
    y2 = elutriton.conv2d_bias_elu(x, w, b, padding=1, alpha=2.0)  # same metadata, new alpha
    assert_close(y2, ref_conv(x, w, b, alpha=2.0), tolerances=GEMM_TOLERANCES)
    y_p0 = elutriton.conv2d_bias_elu(x, w, b, padding=0)
    assert y_p0.shape[-1] == x.shape[-1] - 2


def test_values_equal_but_types_differ_still_validated():
    x = randn((3, 4), torch.float32)
    elutriton.elu(x, alpha=1.0)
    with pytest.raises(TypeError, match="`alpha`"):  # True == 1.0, but a bool is refused
        elutriton.elu(x, alpha=True)
    xc, w, b = conv_args()
    elutriton.conv2d_bias_elu(xc, w, b, stride=(1, 1), padding=1)
    with pytest.raises(TypeError, match="`stride`"):  # (1, True) == (1, 1)
        elutriton.conv2d_bias_elu(xc, w, b, stride=(1, True), padding=1)
    with pytest.raises(TypeError, match="`stride`"):
        elutriton.conv2d_bias_elu(xc, w, b, stride=1.0, padding=1)
    # lists are not hashable: the generic key serves them, with the same results
    y_list = elutriton.conv2d_bias_elu(xc, w, b, stride=[1, 1], padding=[1, 1])
    assert torch.equal(y_list, elutriton.conv2d_bias_elu(xc, w, b, stride=1, padding=1))


def test_errors_raise_on_every_call_and_cache_nothing():
    x, b = randn((2, 3, 4), torch.float32), randn((3,), torch.float32)
    elutriton.bias_elu(x, b)
    size = len(bias_elu_ops._BIAS_ELU_PLANS)
    for _ in range(2):
        with pytest.raises(ValueError, match="`bias` of length"):
            elutriton.bias_elu(x, randn((4,), torch.float32))
        with pytest.raises(ValueError, match="`alpha`"):
            elutriton.bias_elu(x, b, alpha=float("nan"))  # nan != nan: never a hit either
    assert len(bias_elu_ops._BIAS_ELU_PLANS) == size


def test_negative_zero_alpha_is_not_taken_from_a_plan():
    """0.0 == -0.0, so they share a plan; the value itself is passed on each call."""
    x = randn((64,), torch.float32) - 3.0
    for alpha in (0.0, -0.0, 0.0):
        y = elutriton.elu(x, alpha=alpha)
        expected = torch.ops.aten.elu(x.double(), alpha, 1.0, 1.0)
        assert torch.equal(torch.signbit(y), torch.signbit(expected))


def test_grad_mode_and_requires_grad_decide_the_inplace_path():
    x = randn((5,), torch.float32).requires_grad_()
    y = x * 1.0  # non-leaf
    before = y.detach().clone()
    elutriton.elu(y, alpha=0.5, inplace=True)
    assert y.grad_fn is not None
    (g,) = torch.autograd.grad(y.sum(), x)
    rg, _ = ref_bias_elu_grads(before, None, torch.ones(5, device=DEVICE), 0.5)
    assert_close(g, rg, tolerances=GRAD_TOLERANCES)
    with pytest.raises(RuntimeError, match="alpha"):  # same x metadata, other parameters
        elutriton.elu(x * 1.0, alpha=-0.5, inplace=True)
    with torch.no_grad():  # same tensor metadata, grad mode off: allowed
        z = x * 1.0
        elutriton.elu(z, alpha=-0.5, inplace=True)
    assert_close(z, ref_bias_elu(before, None, -0.5))


def test_tf32_flag_is_part_of_the_key(monkeypatch):
    monkeypatch.setenv("ELUTRITON_PATH", "fused")
    x, w, b = conv_args()
    seen = []
    real = conv_kernels.dot_precision
    monkeypatch.setattr(conv_kernels, "dot_precision", lambda *a: seen.append(a[1]) or real(*a))
    for flag in (False, True, False):
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", flag)
        elutriton.conv2d_bias_elu(x, w, b, padding=1)
    assert seen == [False, True]  # the third call hit the first plan
    h, lw = randn((3, 5), torch.float32), randn((4, 5), torch.float32)
    seen.clear()
    for flag in (False, True):
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", flag)
        elutriton.linear_bias_elu(h, lw)
    assert seen == [False, True]


def test_weight_updated_in_place_between_calls():
    x, w, b = conv_args()
    w = w.clone()
    elutriton.conv2d_bias_elu(x, w, b, padding=1)
    with torch.no_grad():
        w.mul_(-2.0)  # bumps the version counter
    assert_close(elutriton.conv2d_bias_elu(x, w, b, padding=1), ref_conv(x, w, b),
                 tolerances=GEMM_TOLERANCES)
    w.data.copy_(torch.flip(w.data, [0]))  # .data writes do not bump it: nothing is cached
    assert_close(elutriton.conv2d_bias_elu(x, w, b, padding=1), ref_conv(x, w, b),
                 tolerances=GEMM_TOLERANCES)
    layer = torch.nn.Linear(5, 3).to(DEVICE)
    h = randn((4, 5), torch.float32)
    elutriton.linear_bias_elu(h, layer.weight, layer.bias)
    layer.weight.data.normal_()
    expected = torch.ops.aten.elu(F.linear(h.double(), layer.weight.double(),
                                           layer.bias.double()), 1.0, 1.0, 1.0)
    assert_close(elutriton.linear_bias_elu(h, layer.weight, layer.bias), expected,
                 tolerances=GEMM_TOLERANCES)


def test_training_steps_match_unfused_pytorch(monkeypatch):
    public = {"conv2d_bias_elu_call": 0, "linear_bias_elu_call": 0}  # calls of the public op
    for name in public:
        op = getattr(elutriton.nn.layers, name)
        monkeypatch.setattr(elutriton.nn.layers, name,
                            lambda *a, _op=op, _name=name: public.__setitem__(
                                _name, public[_name] + 1) or _op(*a))
    torch.manual_seed(0)
    unfused = torch.nn.Sequential(
        torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.ELU(), torch.nn.Flatten(),
        torch.nn.Linear(6 * 5 * 5, 4), torch.nn.SELU()).to(DEVICE).double()
    fused, _ = elutriton.fuse(unfused)
    opt_u = torch.optim.SGD(unfused.parameters(), lr=0.1, momentum=0.9)
    opt_f = torch.optim.SGD(fused.parameters(), lr=0.1, momentum=0.9)
    for _ in range(4):  # same shapes each step: every fused call after the first is a hit
        x = randn((2, 3, 5, 5), torch.float64)
        for model, opt in ((unfused, opt_u), (fused, opt_f)):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            opt.step()
        for (name, pu), pf in zip(unfused.named_parameters(), fused.parameters()):
            torch.testing.assert_close(pf, pu, atol=1e-11, rtol=1e-9, msg=name)
    # every call after the first skipped planning: a hit of the plan cache, or of the layer's
    # memo (nn/layers.py: the call then skips the public op altogether)
    assert conv_ops._CALL_PLANS.hits + 4 - public["conv2d_bias_elu_call"] >= 3
    assert linear_ops._CALL_PLANS.hits + 4 - public["linear_bias_elu_call"] >= 3


def test_backward_plans_miss_for_other_layouts_of_grad_y():
    x = randn((2, 4, 3, 3), torch.float32).to(memory_format=torch.channels_last)
    b = randn((4,), torch.float32)
    for grad_layout in (torch.channels_last, torch.contiguous_format, torch.channels_last):
        xg, bg = x.clone().requires_grad_(), b.clone().requires_grad_()
        y = elutriton.bias_elu(xg, bg)
        grad_y = randn(y.shape, torch.float32).contiguous(memory_format=grad_layout)
        gx, gb = torch.autograd.grad(y, (xg, bg), grad_y)
        rgx, rgb = ref_bias_elu_grads(x, b, grad_y)
        assert_close(gx, rgx, tolerances=GRAD_TOLERANCES)
        assert_close(gb, rgb, tolerances=GRAD_TOLERANCES)
    assert len(bias_elu_ops._BACKWARD_PLANS) == 2


@pytest.mark.parametrize("cap", ["programs", "partials"])
def test_bias_grad_partial_sums_reduced_in_a_fixed_order(monkeypatch, cap):
    """More than one program per column block: partial sums + the reduction kernel, for
    channels innermost and for NCHW channel runs; deterministic from call to call. With
    ``cap="partials"`` the row programs are bounded by MAX_BIAS_PARTIALS (channels innermost:
    several column blocks of BACKWARD_MAX_COLUMNS, each program walking several row tiles)."""
    monkeypatch.setattr(bias_elu_kernels, "BACKWARD_TILE_ELEMENTS", 32)
    if cap == "programs":
        monkeypatch.setattr(bias_elu_kernels, "BACKWARD_TARGET_PROGRAMS", 4)
    else:
        monkeypatch.setattr(bias_elu_kernels, "BACKWARD_TARGET_PROGRAMS", 64)
        monkeypatch.setattr(bias_elu_kernels, "MAX_BIAS_PARTIALS", 3)
        monkeypatch.setattr(bias_elu_kernels, "BACKWARD_MAX_COLUMNS", 8)
        monkeypatch.setattr(bias_elu_kernels, "REDUCE_BLOCK_P", 2)
    for shape, dim, fmt in (((37, 5), 1, None), ((3, 6, 5, 7), 1, torch.contiguous_format),
                            ((3, 6, 5, 7), 1, torch.channels_last), ((37, 20), 1, None)):
        x = randn(shape, torch.float32)
        if fmt is not None:
            x = x.contiguous(memory_format=fmt)
        b = randn((shape[dim],), torch.float32)
        grad_y = randn(shape, torch.float32)
        grads = []
        for _ in range(2):
            xg, bg = x.clone().requires_grad_(), b.clone().requires_grad_()
            grads.append(torch.autograd.grad(elutriton.bias_elu(xg, bg, dim=dim), (xg, bg),
                                             grad_y))
        rgx, rgb = ref_bias_elu_grads(x, b, grad_y, dim=dim)
        assert_close(grads[0][0], rgx, tolerances=GRAD_TOLERANCES)
        assert_close(grads[0][1], rgb, tolerances=GRAD_TOLERANCES)
        assert torch.equal(grads[0][1], grads[1][1])
    clear_plans()  # plans made under the patched constants must not outlive the test


@pytest.mark.parametrize("rows,channels", [(1024, 2048), (4096, 2048), (256, 1024), (8192, 240),
                                           (6272, 1024), (524288, 16), (128, 100), (1, 3)])
def test_bias_grad_partial_buffer_stays_small_on_a_gpu(monkeypatch, rows, channels):
    """The backward's launch shape with the GPU constants, channels innermost: at most
    MAX_BIAS_PARTIALS partial rows (so the fp32 buffer is a few percent of the gradient and
    the reduction takes at most two steps), every row covered once, and the grid still gives
    an H100's 132 SMs a program each where the tensor has that many tiles. (Before the bound a
    [1024, 2048] gradient wrote 1024 partial rows: an 8.4 MB buffer next to 12.6 MB of
    gradient traffic.)"""
    monkeypatch.setattr(bias_elu_kernels, "BACKWARD_TILE_ELEMENTS", 2048)
    monkeypatch.setattr(bias_elu_kernels, "BACKWARD_TARGET_PROGRAMS", 8 * 132)
    block_r, block_col, _ = bias_elu_kernels.backward_tile(rows, channels, True)
    col_blocks, row_programs, rows_per_program = bias_elu_kernels.backward_grid(
        rows, channels, block_r, block_col, True)
    assert row_programs <= bias_elu_kernels.MAX_BIAS_PARTIALS
    assert math.ceil(row_programs / bias_elu_kernels.REDUCE_BLOCK_P) <= 2
    assert rows_per_program % block_r == 0
    assert (row_programs - 1) * rows_per_program < rows <= row_programs * rows_per_program
    assert col_blocks * block_col >= channels > (col_blocks - 1) * block_col
    tiles = math.ceil(rows / block_r) * col_blocks
    assert col_blocks * row_programs >= min(tiles, 132)
    assert row_programs * channels * 4 <= max(rows * channels * 2 / 8, 64 * 1024)


def test_cache_is_bounded_first_in_first_out():
    cache = PlanCache("test", max_size=3)
    built = []
    for size in range(5):
        get_plan(cache, None, lambda t: built.append(t.shape) or t.shape,
                 torch.empty(size + 1))
    assert len(cache) == 3 and cache.misses == 5
    get_plan(cache, None, lambda t: built.append(t.shape), torch.empty(5))  # newest: a hit
    get_plan(cache, None, lambda t: built.append(t.shape) or t.shape, torch.empty(1))  # evicted
    assert cache.hits == 1 and cache.misses == 6
    clear_plans()
    assert len(conv_ops._CALL_PLANS) == 0


def test_get_plan_keys_and_compiling(monkeypatch):
    """A given key hits or misses as it is; an unhashable one (a list among the arguments)
    is rebuilt from the arguments; while dynamo traces (``is_compiling``), a plan is built on
    every call that does not hit, and nothing is stored."""
    from elutriton import plan as plan_module
    cache = PlanCache("test")
    built = []

    def build(*args):
        built.append(args)
        return len(built)
    assert get_plan(cache, ("k", 1), build, 1) == 1 and cache.misses == 1
    assert get_plan(cache, ("k", 1), build, 1) == 1 and cache.hits == 1  # given key: a hit
    assert get_plan(cache, ("k", 2), build, 2) == 2 and len(cache) == 2  # another key: a miss
    assert get_plan(cache, ("k", [3]), build, [3]) == 3  # unhashable key: from the arguments
    assert get_plan(cache, ("k", [3]), build, [3]) == 3 and len(built) == 3  # and a hit
    monkeypatch.setattr(plan_module, "_is_compiling", lambda: True)
    stored = dict(cache.plans)
    assert get_plan(cache, None, build, 5) == 4 and get_plan(cache, None, build, 5) == 5
    assert get_plan(cache, ("k", 9), build, 9) == 6
    assert get_plan(cache, ("k", 1), build, 1) == 1  # (callers pass no key while compiling)
    assert cache.plans == stored and len(built) == 6  # three builds, none stored


class _EvictedMeanwhile(dict):
    """A plan dict in which another thread evicts the oldest plan between our choosing it and
    deleting it (what a thread switch between ``next(iter(plans))`` and ``del`` does)."""

    def __iter__(self):
        oldest = next(super().__iter__())
        super().__delitem__(oldest)
        return iter([oldest])


def test_eviction_tolerates_another_threads_eviction():
    cache = PlanCache("test", max_size=2)
    cache.plans = _EvictedMeanwhile()
    for size in range(4):  # the third and fourth plans evict (a KeyError before)
        assert get_plan(cache, None, lambda t: t.shape, torch.empty(size + 1)) == (size + 1,)
    assert len(cache) <= 2 and list(cache.plans.values())[-1] == (4,)


def test_calls_from_threads_sharing_small_caches(monkeypatch):
    import threading
    from elutriton.plan import _CACHES
    for cache in _CACHES:  # evictions on nearly every call
        monkeypatch.setattr(cache, "max_size", 2)
    if DEVICE == "cpu":  # Triton's interpreter is not thread-safe (its patched globals)
        force_pytorch_fallback(monkeypatch)
    failures = []

    def work(seed):
        try:
            for i in range(150):
                x = randn((1 + (i * 7 + seed) % 5, 3), torch.float32)
                y = elutriton.elu(x, 0.5)
                torch.testing.assert_close(y.double(), ref_bias_elu(x, None, 0.5),
                                           rtol=1e-6, atol=1e-6, equal_nan=True)
        except Exception as error:  # noqa: BLE001 (reported below)
            failures.append(repr(error))

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often (between any two bytecodes)
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert failures == []


def fixed_launches(fn):
    """The FixedLaunch objects a plan's closures hold, at any depth."""
    found = []
    for cell in getattr(fn, "__closure__", None) or ():
        value = cell.cell_contents
        if isinstance(value, FixedLaunch):
            found.append(value)
        elif callable(value) and getattr(value, "__closure__", None):
            found.extend(fixed_launches(value))
    return found


@pytest.mark.gpu
def test_direct_launch_after_the_first_call_matches_triton_path():
    """On a GPU the plan's second call launches the compiled kernel directly."""
    x, w, b = conv_args(torch.float16, n=4, c=16, hw=8, oc=32)
    x = x.to(memory_format=torch.channels_last)
    w = w.contiguous(memory_format=torch.channels_last)
    first = elutriton.conv2d_bias_elu(x, w, b, padding=1)
    second = elutriton.conv2d_bias_elu(x, w, b, padding=1)
    assert torch.equal(first, second)
    launches = [launch for plan in conv_ops._KERNEL_PLANS.plans.values()
                for launch in fixed_launches(plan)]
    assert launches and all(launch.direct for launch in launches)
    unaligned = torch.empty(x.numel() + 1, dtype=x.dtype, device=x.device)[1:].view(
        x.shape[0], x.shape[2], x.shape[3], x.shape[1]).permute(0, 3, 1, 2)
    unaligned.copy_(x)  # same metadata, a pointer off by 2 bytes: not the compiled alignment
    assert_close(elutriton.conv2d_bias_elu(unaligned, w, b, padding=1), first.double(),
                 tolerances=GEMM_TOLERANCES)
    h = randn((64, 256), torch.float16)
    hb = randn((256,), torch.float16)
    for _ in range(3):
        y = elutriton.bias_elu(h, hb, dim=-1)
    assert_close(y, ref_bias_elu(h, hb, dim=-1))
