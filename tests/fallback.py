"""Force the PyTorch fallback (CPU without TRITON_INTERPRET) for every op in one test."""
from elutriton.nn import layers
from elutriton.ops import bias_elu as bias_elu_ops
from elutriton.ops import conv2d as conv_ops
from elutriton.ops import linear as linear_ops


def force_pytorch_fallback(monkeypatch):
    """Make every op's plans take torch's composite (``reference.py``), and the fused layers
    traced by torch.compile too, as on a device without the kernels; ``monkeypatch`` undoes
    it after the test (conftest clears the plans). (The drop-in activations read
    ``TRITON_INTERPRET`` instead: ``nn.activation.runs_torchs_op``.)"""
    for module in (bias_elu_ops, conv_ops, linear_ops, layers):
        monkeypatch.setattr(module, "use_triton", lambda tensor: False)
