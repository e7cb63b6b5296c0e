"""Tensors the kernels cannot read (sparse, MKLDNN, nested) are refused with an error naming the
argument, on the kernel path and on the PyTorch fallback alike. Before, they reached the kernels
or the plans as internal errors (sparse x: "Cannot access storage of SparseTensorImpl", a
ZeroDivisionError, "Unsupported device type for mkldnn layout: meta"), or, where torch's
composite ran, were accepted on one path and not on the other (a sparse input to
linear_bias_elu)."""
import pytest
import torch

import elutriton
from tests.fallback import force_pytorch_fallback
from tests.reference import DEVICE, randn


def _conversions():
    yield "sparse_coo", lambda t: t.to_sparse(), "layout torch.sparse_coo"
    yield "sparse_csr", lambda t: t.to_sparse_csr() if t.dim() == 2 else t.to_sparse(), \
        "layout torch.sparse_c"
    if DEVICE == "cpu":
        yield "mkldnn", lambda t: t.to_mkldnn(), "layout torch._mkldnn"
    yield "nested", lambda t: torch.nested.nested_tensor(list(t)), "a nested tensor"


def test_negative_views_are_refused_not_misread(monkeypatch):
    """A negative view (``z.conj().imag``, ``torch._neg_view``: the values are minus what its
    storage holds) has
    its base's strides; the kernels read storage, so it would have hit a dense tensor's plan
    and come out with the signs flipped (max error ~2 on elu before). Now refused, also after
    a dense call of the same metadata (the plan key holds the bit); the fallback refuses it too
    (one rule on every device)."""
    for fallback in (False, True):
        if fallback:
            force_pytorch_fallback(monkeypatch)
        for op, name, tensor, call in _calls():
            call(tensor.clone())  # a plan for the dense tensor
            negative = torch._neg_view(tensor.clone())
            with pytest.raises(TypeError, match=f"elutriton.{op}: `{name}` is a negative "
                                                f"view.*`{name}.resolve_neg\\(\\)`"):
                call(negative)
            call(negative.resolve_neg())
            # the public way to one: the imaginary part of a conjugated complex tensor
            imaginary = torch.complex(tensor, tensor).conj().imag
            assert imaginary.is_neg()
            with pytest.raises(TypeError, match=f"`{name}` is a negative view"):
                call(imaginary)


def _calls():
    """(op, argument name, call taking the converted argument)."""
    x = randn((2, 3, 5, 5), torch.float32)
    w, b = randn((4, 3, 3, 3), torch.float32), randn((4,), torch.float32)
    h, lw, lb = randn((3, 6), torch.float32), randn((4, 6), torch.float32), randn((4,),
                                                                                   torch.float32)
    yield "elu", "x", h, lambda t: elutriton.elu(t)
    yield "selu", "x", h, lambda t: elutriton.selu(t, inplace=True)
    yield "celu", "x", h, lambda t: elutriton.celu(t, 0.5)
    yield "bias_elu", "x", h, lambda t: elutriton.bias_elu(t, randn((6,), torch.float32), dim=-1)
    yield "bias_elu", "bias", b, lambda t: elutriton.bias_elu(x[:, :1].expand(2, 4, 5, 5), t)
    yield "conv2d_bias_elu", "input", x, lambda t: elutriton.conv2d_bias_elu(t, w, b)
    yield "conv2d_bias_elu", "weight", w, lambda t: elutriton.conv2d_bias_elu(x, t, b)
    yield "conv2d_bias_elu", "bias", b, lambda t: elutriton.conv2d_bias_elu(x, w, t)
    yield "linear_bias_elu", "input", h, lambda t: elutriton.linear_bias_elu(t, lw, lb)
    yield "linear_bias_elu", "weight", lw, lambda t: elutriton.linear_bias_elu(h, t, lb)
    yield "linear_bias_elu", "bias", lb, lambda t: elutriton.linear_bias_elu(h, lw, t)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support")
@pytest.mark.parametrize("fallback", [False, True], ids=["kernels", "fallback"])
@pytest.mark.parametrize("kind,convert,what", list(_conversions()),
                         ids=[kind for kind, _, _ in _conversions()])
def test_tensors_without_strided_storage_are_refused(kind, convert, what, fallback,
                                                     monkeypatch):
    if fallback:
        force_pytorch_fallback(monkeypatch)
    for op, name, tensor, call in _calls():
        try:
            converted = convert(tensor)
        except RuntimeError:  # (torch has no such conversion for this tensor)
            continue
        with pytest.raises(TypeError, match=f"elutriton.{op}: expected `{name}` to be a dense "
                                            f"\\(strided\\) tensor, got {what}"):
            call(converted)
        # a refused call caches nothing: the same call with the dense tensor works
        call(tensor.clone())
