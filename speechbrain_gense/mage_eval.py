"""``gense-mage-eval``: the old name of :mod:`speechbrain_gense.evaluation` (``gense-evaluate``).

Kept for a while as an alias. Its MAGE-only options map onto the generic
grid: ``--steps 1,8`` is ``--grid steps=1,8``, ``--corrector on,off`` is
``--grid corrector=on,off`` and ``--decode ctf,confidence`` is
``--grid strategy=ctf,confidence``; everything else is ``gense-evaluate``'s.

Example
-------
>>> translate_args(["--model", "m=DIR", "--steps", "1,8", "--decode=ctf"])
['--model', 'm=DIR', '--grid', 'steps=1,8', '--grid', 'strategy=ctf']
"""

import sys

from .evaluation import main as evaluate_main

PROG = "gense-mage-eval"

#: Old option -> grid axis.
OLD_AXES = {"--steps": "steps", "--corrector": "corrector", "--decode": "strategy"}


def translate_args(argv):
    """The ``gense-evaluate`` arguments of a ``gense-mage-eval`` command line."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name in OLD_AXES:
            if not eq:
                i += 1
                value = argv[i] if i < len(argv) else ""
            out += ["--grid", f"{OLD_AXES[name]}={value}"]
        else:
            out.append(arg)
        i += 1
    return out


def main(argv=None):
    """``gense-mage-eval``: ``gense-evaluate`` with the old MAGE options."""
    argv = sys.argv[1:] if argv is None else list(argv)
    return evaluate_main(translate_args(argv), prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
