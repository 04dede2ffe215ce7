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
    """
    text = str(error)
    return text.splitlines()[0] if text.strip() else type(error).__name__


__all__ = ["first_line"]
