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


__all__ = ["first_line", "torch_threads"]
