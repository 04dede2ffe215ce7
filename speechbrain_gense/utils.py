"""Small helpers shared by the library and its commands."""


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


__all__ = ["first_line"]
