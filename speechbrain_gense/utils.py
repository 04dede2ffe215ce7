"""Small helpers shared by the library and its commands."""

from contextlib import contextmanager


def first_line(error):
    """The first line of an exception's message (its type name when it has none).

    Every one-line error message of the project is made with it.

    Example
    -------
    >>> first_line(ValueError("bad file\\ndetails"))
    'bad file'
    >>> first_line(KeyError())
    'KeyError'
    >>> first_line(OSError("\\nsecond line"))
    'second line'
    >>> first_line(KeyError("n_fft"))
    "missing key 'n_fft'"
    """
    text = str(error)
    if isinstance(error, KeyError) and error.args:
        text = f"missing key {error.args[0]!r}"
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__



@contextmanager
def torch_threads(count):
    """Runs the block with ``torch.set_num_threads(count)``, then restores the
    previous count (also after an error).

    Used where the thread count changes results or speed: a small LSTM slows
    down up to 100x on two threads when another process keeps a core busy
    (Resemblyzer: 0.05 s against 7.8 s for a 3 s utterance on 2 cores), and
    multi-threaded reductions round differently, so the corpus mixtures are
    made on one thread to be byte-identical on every machine.

    Example
    -------
    >>> import torch
    >>> before = torch.get_num_threads()
    >>> with torch_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


__all__ = ["BF16_PRECISIONS", "first_line", "native_bf16", "resolve_bf16", "torch_threads"]


#: Precisions of the frozen feature encoders that may run in bfloat16.
BF16_PRECISIONS = ("fp32", "bf16", "auto")


def native_bf16(device):
    """Whether ``device`` computes bfloat16 natively (not by emulation).

    CPU: oneDNN's check for AVX-512 BF16 / AMX
    (``torch.ops.mkldnn._is_mkldnn_bf16_supported``); CUDA:
    ``torch.cuda.is_bf16_supported``; anything else: False.

    Example
    -------
    >>> import torch
    >>> isinstance(native_bf16(torch.device("cpu")), bool)
    True
    """
    import torch

    device = torch.device(device)
    try:
        if device.type == "cpu":
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        if device.type == "cuda":
            return bool(torch.cuda.is_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
    return False


def resolve_bf16(precision, device):
    """``"fp32"`` / ``"bf16"`` / ``"auto"`` -> ``"fp32"`` or ``"bf16"`` on ``device``.

    Example
    -------
    >>> import torch
    >>> resolve_bf16("auto", torch.device("cpu")) in ("fp32", "bf16")
    True
    """
    if precision not in BF16_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(BF16_PRECISIONS)}, "
                         f"got {precision!r}")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision
