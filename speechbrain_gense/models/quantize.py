"""Int8 dynamic quantisation of a model's linear layers (the ``precision="int8"`` option).

One implementation for every method (MAGE's enhancer, GenSE's two LMs):

- :func:`conv1d_to_linear`: ``transformers``' GPT-2 keeps its attention and
  MLP projections in ``transformers.pytorch_utils.Conv1D`` (``y = x W + b``,
  weight ``[in, out]``), which :func:`torch.ao.quantization.quantize_dynamic`
  does not know; each one is replaced by the equivalent ``nn.Linear``
  (weight transposed, same outputs);
- :func:`quantize_int8`: a quantised *copy* (eval mode) where every
  ``nn.Linear`` (after the conversion) runs int8 weights with dynamically
  quantised activations; embeddings and norms stay float32;
- :func:`cached_int8`: the copy of a module of a model, built on first use
  and kept until the module's weights change (training, ``load_state_dict``).

Example
-------
>>> from transformers.pytorch_utils import Conv1D
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> net = nn.Sequential(Conv1D(8, 4), nn.ReLU(), nn.Linear(8, 3))
>>> x = torch.randn(2, 5, 4)
>>> q = quantize_int8(net)
>>> type(q[0]).__name__, q(x).shape, bool((q(x) - net(x)).abs().max() < 0.05)
('Linear', torch.Size([2, 5, 3]), True)
"""

import copy

import torch
from torch import nn


def conv1d_to_linear(module):
    """Replaces every ``transformers`` ``Conv1D`` of ``module`` by the same ``nn.Linear``.

    In place; the new layers hold copies of the weights (transposed to
    ``[out, in]``), so the outputs are unchanged up to float rounding.

    Arguments
    ---------
    module : torch.nn.Module
        Any module (e.g. a ``GPT2LMHeadModel``).

    Returns
    -------
    torch.nn.Module
        ``module`` itself (or a new ``nn.Linear`` when ``module`` is a ``Conv1D``).

    Example
    -------
    >>> from transformers.pytorch_utils import Conv1D
    >>> conv = Conv1D(6, 4)
    >>> lin = conv1d_to_linear(conv)
    >>> x = torch.randn(3, 4)
    >>> lin.weight.shape, torch.allclose(lin(x), conv(x), atol=1e-6)
    (torch.Size([6, 4]), True)
    """
    from transformers.pytorch_utils import Conv1D

    def convert(conv):
        lin = nn.Linear(conv.nx, conv.nf, bias=conv.bias is not None,
                        device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            lin.weight.copy_(conv.weight.t())
            if conv.bias is not None:
                lin.bias.copy_(conv.bias)
        lin.train(conv.training)
        return lin

    if isinstance(module, Conv1D):
        return convert(module)
    for name, child in list(module.named_children()):
        if isinstance(child, Conv1D):
            setattr(module, name, convert(child))
        else:
            conv1d_to_linear(child)
    return module


def quantize_int8(module):
    """An int8 copy of ``module``: dynamic quantisation of its linear layers (CPU).

    :func:`torch.ao.quantization.quantize_dynamic` (``qint8`` weights,
    activations quantised per call) of a deep copy in eval mode, after
    :func:`conv1d_to_linear`; ``module`` itself is not changed.

    Arguments
    ---------
    module : torch.nn.Module
        A float32 module on the CPU.

    Returns
    -------
    torch.nn.Module
        The quantised copy, in eval mode.

    Raises
    ------
    ValueError
        When ``module`` has parameters off the CPU (int8 kernels are CPU-only).

    Example
    -------
    >>> q = quantize_int8(nn.Linear(4, 2))
    >>> type(q).__name__, q.weight().dtype, q(torch.randn(1, 4)).shape
    ('Linear', torch.qint8, torch.Size([1, 2]))
    """
    from torch.ao.quantization import quantize_dynamic

    devices = {p.device.type for p in module.parameters()}
    if devices - {"cpu"}:
        raise ValueError(f"precision 'int8' runs on CPU only, the model is on "
                         f"{', '.join(sorted(devices))}")
    model = conv1d_to_linear(copy.deepcopy(module)).eval()
    if isinstance(model, nn.Linear):  # quantize_dynamic replaces children only
        return quantize_dynamic(nn.Sequential(model), {nn.Linear}, dtype=torch.qint8)[0]
    return quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)


def _stamp(module):
    return tuple((p.data_ptr(), p._version) for p in module.parameters())


def cached_int8(owner, name, module):
    """:func:`quantize_int8` of ``module``, cached on ``owner`` under ``name``.

    Built on the first call and kept (not as a submodule: it is neither
    saved nor moved with ``owner``) until a parameter of ``module`` changes
    (in-place update by an optimiser, ``load_state_dict``, a new tensor).

    Arguments
    ---------
    owner : object
        Where the cache lives (e.g. the model).
    name : str
        Key of the cached copy (one per quantised part).
    module : torch.nn.Module
        The float module.

    Returns
    -------
    torch.nn.Module
        The int8 copy.

    Example
    -------
    >>> owner, lin = nn.Module(), nn.Linear(4, 2)
    >>> cached_int8(owner, "lin", lin) is cached_int8(owner, "lin", lin)
    True
    >>> with torch.no_grad():
    ...     _ = lin.weight.add_(1.0)
    >>> first = cached_int8(owner, "lin", lin)
    >>> first is cached_int8(owner, "lin", lin)
    True
    """
    caches = owner.__dict__.setdefault("_int8_copies", {})
    stamp = _stamp(module)
    cached = caches.get(name)
    if cached is None or cached[0] != stamp:
        caches[name] = (stamp, quantize_int8(module))
    return caches[name][1]


__all__ = ["cached_int8", "conv1d_to_linear", "quantize_int8"]
