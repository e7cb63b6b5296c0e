"""Launch plans: what a call decides from metadata alone, decided once and cached.

A public call checks its arguments, plans the launch and launches. Checking and planning
read only metadata: every tensor's type, shape, strides, dtype and device (and, for the
in-place ELU, requires_grad), the activation parameters with their Python types (``1.0`` and ``True`` compare equal but
only one is valid), the conv arguments and, where they matter, grad mode and torch's TF32
flags (passed to the plan builders as arguments, so they are part of the key). A plan is
cached under exactly that tuple, so a hit skips validation and planning and goes straight to
the launch. (Data-pointer alignment, which a compiled kernel is specialized on, is checked
at the launch: ``kernels/launch.py``.)

What can change without the metadata changing (a tensor's values, a weight updated in place)
never lives in a plan: a plan holds no tensor. In particular there is no cache of converted
(channels_last) weights: a cache keyed by a weight's version counter goes stale when the
weight is written through ``.data`` (which does not bump the counter), so a weight that is not
in the kernel's layout is converted on every call (README, "Weights").

Each op owns a ``PlanCache``; they are bounded (first in, first out) so a stream of new
shapes cannot grow memory without limit. Calls from several threads may share a cache: a
lookup and an insert are single dict operations, and an eviction tolerates another thread's.
``clear_plans()`` empties them all (tests, or after changing ``ELUTRITON_CONFIG_DIR`` or a
tuned table: it also drops the loaded tables).
"""
import torch

DEFAULT_MAX_PLANS = 512
_is_compiling = torch.compiler.is_compiling
_CACHES = []
_GENERATION = [0]  # bumped by clear_plans: memos of decisions made from plans compare it
_ON_CLEAR = []  # other caches that plans are made from (the loaded tuned tables)


class PlanCache:
    """A bounded ``key -> plan`` dict with first-in-first-out eviction and hit counters."""

    def __init__(self, name: str, max_size: int = DEFAULT_MAX_PLANS):
        self.name = name
        self.max_size = max_size
        self.plans = {}
        self.hits = 0
        self.misses = 0
        _CACHES.append(self)

    def put(self, key, plan):
        plans = self.plans
        while len(plans) >= self.max_size:
            try:
                del plans[next(iter(plans))]
            except (KeyError, RuntimeError, StopIteration):
                pass  # another thread evicted it (or changed the dict) between the two steps
        plans[key] = plan
        return plan

    def clear(self):
        self.plans.clear()
        self.hits = self.misses = 0

    def __len__(self):
        return len(self.plans)


def clear_plans():
    """Empty every plan cache (and their counters) and forget the tuned tables loaded so far,
    so the next plans read the tables (and ``ELUTRITON_CONFIG_DIR``) afresh."""
    _GENERATION[0] += 1
    for cache in _CACHES:
        cache.clear()
    for clear in _ON_CLEAR:
        clear()


def plans_generation() -> int:
    """How many times ``clear_plans()`` ran: a memo of a decision that plans made (the fused
    layers' memo, ``ops/call_memo.py``) holds it and is stale when it moved."""
    return _GENERATION[0]


def on_clear_plans(clear) -> None:
    """Have ``clear_plans()`` also call ``clear()`` (a cache that plans are made from)."""
    _ON_CLEAR.append(clear)


# What building a key raises for an argument that has none: AttributeError for a non-tensor,
# RuntimeError for a tensor without sizes or strides (a nested tensor). The call then goes to
# validation, which names the argument.
NO_KEY = (AttributeError, RuntimeError)


def tensor_key(t):
    """Everything about a tensor that a plan may depend on; None for None.

    ``requires_grad`` is not here: only the in-place ELU plan depends on it, and takes it as an
    argument of its own (``FusedOp`` reads it on every call).

    The data pointer's alignment, which a compiled kernel is specialized on, is not here:
    ``FixedLaunch`` checks it at the launch (GPU only), where the launched tensors are.
    The layout and the negative bit are here although a plan is only made for a strided
    tensor without that bit (``_validate.check_float_tensor``): a sparse or MKLDNN tensor can
    report the strides of a dense one, and a negative view (``torch._neg_view``) has its base's
    strides, so without them a call on one would hit a dense tensor's plan and skip the check
    (a kernel reading a negative view's storage would return a silently wrong result).
    Raises one of ``NO_KEY`` for things that are not tensors and tensors without sizes.
    """
    if t is None:
        return None
    return (t.__class__, t.shape, t.stride(), t.dtype, t.device, t.layout, t.is_neg())


def value_key(v):
    """A hashable key for an argument that keeps its Python type (``1 == 1.0 == True``)."""
    if isinstance(v, (list, tuple)):
        return (v.__class__, tuple(value_key(item) for item in v))
    return (v.__class__, v)


def pair_key(v):
    """``value_key`` for a conv argument (stride, padding, dilation): a bare int or a tuple of
    two ints (what nn.Conv2d stores) keys as itself, ~0.7 us cheaper than ``value_key``;
    anything else as ``value_key``. The forms never collide: ``value_key`` gives (type, value)
    pairs, and a type never equals an int."""
    if v.__class__ is int or (v.__class__ is tuple and len(v) == 2 and v[0].__class__ is int
                              and v[1].__class__ is int):
        return v
    return value_key(v)


def args_key(args):
    """``tensor_key`` for tensors, ``value_key`` for everything else, as one tuple."""
    return tuple(tensor_key(a) if isinstance(a, torch.Tensor) else value_key(a) for a in args)


def get_plan(cache: PlanCache, key, build, *args):
    """``build(*args)``, cached in ``cache`` under ``key`` (None: ``args_key(args)``).

    Hot paths pass a key they built inline (the same fields as ``args_key``, cheaper); a key
    that turns out unhashable (a list argument) is rebuilt with ``args_key``. ``build``
    validates and may raise; nothing is cached then. While dynamo traces, plans are built
    uncached (what is traced is the plan's decisions, not the cache): the callers that pass
    a key pass None then (dynamo cannot trace ``tensor_key``), so a hit on a given key is
    returned before the check.
    """
    plan = None
    if key is not None:
        try:
            plan = cache.plans.get(key)
        except TypeError:  # a list among the arguments
            key = None
    if plan is None:
        if _is_compiling():
            return build(*args)
        if key is None:
            try:
                key = args_key(args)
                plan = cache.plans.get(key)
            except Exception:  # unhashable, or no metadata: plan this call alone
                return build(*args)
    if plan is not None:
        cache.hits += 1
        return plan
    cache.misses += 1
    return cache.put(key, build(*args))


def kernel_plan(cache: PlanCache, build, *args):
    """``get_plan`` for a kernel plan built inside a public call's plan; None while dynamo
    traces (the traced call is the custom op, whose implementation plans at run time)."""
    if _is_compiling():
        return None
    return get_plan(cache, None, build, *args)


# torch's TF32 flags, read from C (the ``torch.backends`` properties cost 3x more per call);
# None while dynamo traces, which cannot trace these calls and plans nothing (``kernel_plan``).
# The legacy getters raise when the new per-op API (``torch.backends.cudnn.conv.fp32_precision
# = "ieee"``, ``torch.backends.fp32_precision``) has left the flags that share a legacy flag
# different (conv and RNN for cuDNN); torch's own convolution and matmul read their op's
# precision then (``Context::allowTF32CuDNN(CONV)``), and so do we. Where the legacy getter
# does not raise it equals that precision, so the common case costs one C call.
_cudnn_tf32 = torch._C._get_cudnn_allow_tf32
_cublas_tf32 = torch._C._get_cublas_allow_tf32
_fp32_precision = getattr(torch._C, "_get_fp32_precision_getter", None)


def _op_allows_tf32(legacy, op):
    """``legacy()``, or where it raises for mixed flags, whether CUDA's fp32 precision for
    ``op`` ("conv", "matmul"; resolved by torch through "all" and the generic setting) is
    TF32."""
    try:
        return legacy()
    except RuntimeError:
        if _fp32_precision is None:
            raise
        return _fp32_precision("cuda", op) == "tf32"


def cudnn_allow_tf32(compiling=None):
    """Whether torch's cuDNN convolutions may use TF32 for fp32 (what fp32 conv layers follow);
    None while dynamo traces (``compiling``: ``torch.compiler.is_compiling()`` where the
    caller read it, None to read it here)."""
    if compiling is None:
        compiling = _is_compiling()
    return None if compiling else _op_allows_tf32(_cudnn_tf32, "conv")


def matmul_allow_tf32(compiling=None):
    """Whether torch's fp32 matmuls may use TF32 (what fp32 linear layers follow); None while
    dynamo traces (``compiling`` as for ``cudnn_allow_tf32``)."""
    if compiling is None:
        compiling = _is_compiling()
    return None if compiling else _op_allows_tf32(_cublas_tf32, "matmul")
