"""When the fused conv's backward runs elutriton's Triton kernels and when cuDNN
(ops/backward_path.py): the forced choice, the tuned table's sections with and without an
input gradient (bucketed, validated), the default rule, and the cases Triton never takes."""
import json

import pytest
import torch

import elutriton
from elutriton.kernels import tuning
from elutriton.ops import backward_path
from elutriton.ops import conv_input_grad as dgrad_ops
from elutriton.ops import conv_weight_grad as wgrad_ops
from elutriton.plan import clear_plans
from tests.conv_grad_cases import run_case, spy_plans
from tests.reference import DEVICE, randn


@pytest.fixture(autouse=True)
def auto_choice(monkeypatch, tmp_path):
    monkeypatch.setenv("ELUTRITON_PATH", "fused")
    monkeypatch.delenv("ELUTRITON_BACKWARD", raising=False)
    monkeypatch.setenv("ELUTRITON_CONFIG_DIR", str(tmp_path))  # no table unless a test writes one


def spy(monkeypatch):
    """Lists "weight"/"input" for each Triton kernel plan built."""
    used = spy_plans(monkeypatch, wgrad_ops, "plan_conv2d_weight_grad", lambda a: "weight")
    return spy_plans(monkeypatch, dgrad_ops, "plan_conv2d_input_grad", lambda a: "input", used)


def test_default_rule_triton_below_16_input_channels_where_the_h100_measured_it_faster(
        monkeypatch):
    used = spy(monkeypatch)
    run_case(torch.float16, 2, 3, (6, 6), 8, (3, 3), 1, 1)                    # fp16: Triton
    assert used == ["weight"]
    used.clear()
    run_case(torch.float16, 2, 3, (7, 6), 8, (3, 3), 1, 1, input_grad=True)
    assert used == ["weight", "input"]
    used.clear()
    run_case(torch.float32, 2, 3, (6, 6), 8, (3, 3), 1, 1)         # fp32 without dX: Triton
    assert used == ["weight"]
    used.clear()
    run_case(torch.float32, 2, 3, (7, 6), 8, (3, 3), 1, 1, input_grad=True)   # with: cuDNN
    run_case(torch.bfloat16, 2, 3, (6, 6), 8, (3, 3), 1, 1)                   # bf16: cuDNN
    run_case(torch.bfloat16, 2, 3, (7, 6), 8, (3, 3), 1, 1, input_grad=True)
    run_case(torch.float16, 2, 16, (6, 6), 8, (3, 3), 1, 1)                   # 16 channels
    run_case(torch.float16, 2, 16, (7, 6), 8, (3, 3), 1, 1, input_grad=True)
    run_case(torch.float32, 2, 16, (6, 6), 8, (3, 3), 1, 1)
    assert used == []


def test_cases_the_triton_backward_never_takes(monkeypatch):
    used = spy(monkeypatch)
    monkeypatch.setenv("ELUTRITON_BACKWARD", "triton")  # even when forced
    run_case(torch.float32, 2, 3, (7, 6), 8, (3, 3), 1, 1, params=(-0.5, 1.0, 1.0))  # no y kept
    x = randn((2, 4, 6, 6), torch.float32).requires_grad_()  # groups = 2
    w = randn((6, 2, 3, 3), torch.float32).requires_grad_()
    elutriton.conv2d_bias_elu(x, w, padding=1, groups=2).sum().backward()
    x = randn((2, 3, 6, 6), torch.float32).requires_grad_()  # frozen weight: no dW wanted
    w = randn((6, 3, 3, 3), torch.float32)
    b = randn((6,), torch.float32).requires_grad_()
    elutriton.conv2d_bias_elu(x, w, b, padding=1).sum().backward()
    assert used == []
    # create_graph (a double backward): cuDNN, whose path is differentiable
    w.requires_grad_()
    y = elutriton.conv2d_bias_elu(x, w, b, padding=1)
    torch.autograd.grad(y.sum(), (x, w), create_graph=True)
    assert used == []
    torch.autograd.grad(elutriton.conv2d_bias_elu(x, w, b, padding=1).sum(), (x, w))
    assert used == ["weight", "input"]


def test_forced_choice_and_a_bad_value(monkeypatch):
    used = spy(monkeypatch)
    monkeypatch.setenv("ELUTRITON_BACKWARD", "cudnn")
    run_case(torch.float32, 2, 3, (9, 6), 8, (3, 3), 1, 1, input_grad=True)
    assert used == []
    monkeypatch.setenv("ELUTRITON_BACKWARD", "triton")
    run_case(torch.float32, 2, 20, (5, 6), 8, (3, 3), 1, 1, input_grad=True)  # rule: cuDNN
    assert used == ["weight", "input"]
    monkeypatch.setenv("ELUTRITON_BACKWARD", "fast")
    x = randn((1, 3, 4, 4), torch.float32)
    w = randn((2, 3, 3, 3), torch.float32).requires_grad_()
    with pytest.raises(ValueError, match="ELUTRITON_BACKWARD"):
        elutriton.conv2d_bias_elu(x, w, padding=1).sum().backward()


def write_table(tmp_path, sections):
    arch = tuning.arch_name(torch.device(DEVICE))
    (tmp_path / f"{arch}.json").write_text(json.dumps({"paths": sections}))
    clear_plans()


def key(n_pixels, in_channels, out_channels=8, k=3):
    # fp32 with TF32 off (conftest), bias present
    return tuning.shape_key("float32", "ieee", n_pixels, out_channels, in_channels, k, k, 1, True)


def test_the_tables_sections_decide_per_input_gradient_and_serve_their_bucket(
        tmp_path, monkeypatch):
    used = spy(monkeypatch)
    # fp32, 3 channels (rule: Triton without an input gradient, cuDNN with): measured the
    # other way round in each section; 16 channels (rule: cuDNN): measured Triton with an
    # input gradient only
    write_table(tmp_path, {
        "conv2d_bias_elu/backward_params": {key(2 * 36, 3): "cudnn"},
        "conv2d_bias_elu/backward": {key(2 * 36, 3): "triton", key(2 * 36, 16): "triton"}})
    run_case(torch.float32, 2, 3, (6, 6), 8, (3, 3), 1, 1)
    assert used == []
    run_case(torch.float32, 2, 3, (6, 6), 8, (3, 3), 1, 1, input_grad=True)
    assert used == ["weight", "input"]
    used.clear()
    run_case(torch.float32, 2, 16, (6, 6), 8, (3, 3), 1, 1, input_grad=True)
    assert used == ["weight", "input"]
    used.clear()
    run_case(torch.float32, 2, 16, (6, 6), 8, (3, 3), 1, 1)  # rule
    assert used == []
    # batch 6: three times the pixels, the same bucket; batch 16: beyond it, the rule
    run_case(torch.float32, 6, 3, (6, 6), 8, (3, 3), 1, 1)
    assert used == []
    run_case(torch.float32, 16, 3, (6, 6), 8, (3, 3), 1, 1)
    assert used == ["weight"]


def test_a_backward_entry_with_a_forward_choice_is_rejected():
    with pytest.warns(UserWarning, match="path must be one of"):
        t = tuning.TunedTable({"paths": {
            "conv2d_bias_elu/backward": {key(72, 3): "fused", key(720, 3): "cudnn"},
            "conv2d_bias_elu/channels_last": {key(72, 3): "triton"}}})
    assert t.lookup("paths/conv2d_bias_elu/backward", key(72, 3)) is None
    assert t.lookup("paths/conv2d_bias_elu/backward", key(720, 3)) == "cudnn"
    assert t.lookup("paths/conv2d_bias_elu/channels_last", key(72, 3)) is None
    assert {reason for *_, reason in t.rejected} == {
        "path must be one of ('triton', 'cudnn')", "path must be one of ('fused', 'library')"}


def test_the_choice_cache_misses_for_other_dtypes_flags_shapes_and_input_gradients(
        tmp_path, monkeypatch):
    # measured cuDNN for the 16-bit, the TF32 and the no-bias variants of a 72-pixel fp32
    # 3-channel layer without an input gradient (the rule: Triton), and at 720 pixels each
    # section the other way from the rule. Each pair differs in one field of the cache key,
    # asked in the order that would hit a key missing it.
    write_table(tmp_path, {
        "conv2d_bias_elu/backward_params": {
            tuning.shape_key("float16", "None", 72, 8, 3, 3, 3, 1, True): "cudnn",
            tuning.shape_key("float32", "tf32", 72, 8, 3, 3, 3, 1, True): "cudnn",
            tuning.shape_key("float32", "ieee", 72, 8, 3, 3, 3, 1, False): "cudnn",
            key(720, 3): "cudnn"},
        "conv2d_bias_elu/backward": {key(720, 3): "triton"}})

    def choose(dtype=torch.float32, allow_tf32=False, n_pixels=72, has_bias=True,
               input_grad=False, weight_shape=(8, 3, 3, 3)):
        grad_y = torch.empty(1, dtype=dtype, device=DEVICE)
        return backward_path.backward_path(grad_y, weight_shape, 1, n_pixels, has_bias, True,
                                           input_grad, True, allow_tf32, False)
    assert choose() == "triton"
    assert choose(dtype=torch.float16) == "cudnn"
    assert choose(allow_tf32=True) == "cudnn"
    assert choose(has_bias=False) == "cudnn"
    assert choose(n_pixels=720, input_grad=True) == "triton"
    assert choose(n_pixels=720) == "cudnn"
    assert choose(n_pixels=720, weight_shape=(8, 3, 5, 5)) == "triton"
    monkeypatch.setenv("ELUTRITON_BACKWARD", "cudnn")  # read on every backward, no clear_plans
    assert choose() == "cudnn"
    monkeypatch.setenv("ELUTRITON_BACKWARD", "auto")
    assert choose() == "triton"
