"""Helpers shared by the command-line tools and the benchmarks.

One place for what every command does the same way: the metric list, the
device, the test manifest (a given one or the embedded corpus's test split),
``[NAME=]VALUE`` and comma-separated arguments, usage errors (one line, exit
status 2), CUDA synchronisation for timings, and the result files (a
markdown table and a JSON file, written atomically).
"""

import json
import os
import re
import sys

import torch

from .models.io import atomic_write_text
from .utils import first_line

#: Names of models, systems and rows: letters, digits, ``_ . + -``.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")

#: ``on``/``off`` (and ``true``/``false``) values of switches.
SWITCHES = {"on": True, "off": False, "true": True, "false": False}


class UsageError(Exception):
    """A problem with the command line that stops the whole command (exit status 2)."""


def usage_error(prog, error):
    """Prints ``PROG: error: <first line>`` to stderr; returns the exit status 2."""
    print(f"{prog}: error: {first_line(error) if isinstance(error, BaseException) else error}",
          file=sys.stderr)
    return 2


def exit_status(prog, failed):
    """0 when nothing ``failed``, else 1 after a one-line count on stderr.

    Example
    -------
    >>> exit_status("gense-x", 0)
    0
    """
    if failed:
        print(f"{prog}: {failed} files failed (see the errors above)", file=sys.stderr)
        return 1
    return 0


def parse_value(text):
    """A command-line value: int, float, bool (``on/off/true/false``), None or text.

    Example
    -------
    >>> [parse_value(t) for t in ("8", "0.5", "on", "False", "none", "ctf")]
    [8, 0.5, True, False, None, 'ctf']
    """
    text = text.strip()
    lowered = text.lower()
    if lowered in SWITCHES:
        return SWITCHES[lowered]
    if lowered in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_list(text, cast=parse_value, option="value"):
    """Comma-separated values of an option, cast one by one (one-line ``ValueError``).

    Example
    -------
    >>> parse_list("1, 4,8", int, "--steps")
    [1, 4, 8]
    >>> parse_list("1,1", int, "--steps")
    Traceback (most recent call last):
    ...
    ValueError: --steps: a value is repeated in '1,1'
    """
    values = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        try:
            values.append(cast(item))
        except (ValueError, KeyError):
            raise ValueError(f"{option}: bad value {item!r}") from None
    if not values:
        raise ValueError(f"{option}: no value")
    if len(set(map(repr, values))) < len(values):
        raise ValueError(f"{option}: a value is repeated in {text!r}")
    return values


def parse_assignment(item, option):
    """``KEY=VALUE`` -> ``(key, value text)`` (one-line ``ValueError`` otherwise).

    Example
    -------
    >>> parse_assignment("steps=1,4", "--grid")
    ('steps', '1,4')
    """
    key, eq, value = (s.strip() for s in item.partition("="))
    if not eq or not key or not value:
        raise ValueError(f"{option}: expected NAME=VALUE, got {item!r}")
    return key, value


def parse_named(arg):
    """Splits ``[NAME=]PATH`` into ``(name, path)``; the name defaults to the path's last part.

    Example
    -------
    >>> parse_named("mage=pretrained/mage")
    ('mage', 'pretrained/mage')
    >>> parse_named("results/mage_random/model/")
    ('model', 'results/mage_random/model/')
    """
    name, eq, path = arg.partition("=")
    if not eq or not NAME.match(name):  # the "=" belongs to the path
        name, path = None, arg
    if name is None:
        name = os.path.basename(os.path.normpath(path))
    return name, path


def add_metric_argument(parser, default):
    """``--metrics`` (comma-separated metric names of :data:`speechbrain_gense.metrics.METRICS`)."""
    parser.add_argument("--metrics", default=",".join(default),
                        help=f"comma-separated metrics (default {','.join(default)})")


def parse_metrics(text):
    """The metric names of ``--metrics``; ``UsageError`` for an unknown one.

    Example
    -------
    >>> parse_metrics("pesq, estoi")
    ['pesq', 'estoi']
    >>> parse_metrics("pesq,psq")
    Traceback (most recent call last):
    ...
    speechbrain_gense.commands.UsageError: unknown metric 'psq' (choose from ...)
    """
    from .metrics import METRICS

    metrics = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise UsageError(f"unknown metric {unknown[0] if unknown else ''!r} "
                         f"(choose from {','.join(METRICS)})")
    return metrics


def add_device_arguments(parser):
    """``--device`` and ``--threads``."""
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")


def resolve_device(text):
    """``torch.device`` of ``--device``; ``UsageError`` when bad or unavailable.

    Example
    -------
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device("gpu")
    Traceback (most recent call last):
    ...
    speechbrain_gense.commands.UsageError: bad --device 'gpu' (e.g. cpu, cuda, cuda:1)
    """
    try:
        device = torch.device(text)
    except RuntimeError:
        raise UsageError(f"bad --device {text!r} (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {text}: CUDA is not available")
    return device


def check_threads(threads):
    """``UsageError`` for ``--threads`` below 1."""
    if threads is not None and threads < 1:
        raise UsageError(f"--threads must be >= 1, got {threads}")


def add_corpus_arguments(parser):
    """``--corpus``, ``--minutes``, ``--corpus-seed``, ``--manifest``, ``--max-utts``."""
    parser.add_argument("--corpus", default="corpus",
                        help="embedded corpus folder, built when missing (default: corpus)")
    parser.add_argument("--minutes", type=float, default=20.0,
                        help="corpus size when it is built (default 20)")
    parser.add_argument("--corpus-seed", type=int, default=1234,
                        help="seed of the corpus when it is built (default 1234)")
    parser.add_argument("--manifest", help="use this manifest instead of the corpus test split")
    parser.add_argument("--max-utts", type=int, help="use at most this many utterances")


def check_corpus_args(args):
    """``UsageError`` for a missing ``--manifest`` or ``--max-utts`` below 1."""
    if args.max_utts is not None and args.max_utts < 1:
        raise UsageError(f"--max-utts must be >= 1, got {args.max_utts}")
    if args.manifest and not os.path.isfile(args.manifest):
        raise UsageError(f"{args.manifest}: no such manifest")


def resolve_manifest(args, progress=True):
    """``--manifest``, or the test split of ``--corpus`` (built when missing)."""
    if args.manifest:
        return args.manifest
    from .data.corpus import build_corpus

    return build_corpus(args.corpus, minutes=args.minutes, seed=args.corpus_seed,
                        progress=progress)["test"]


def sync(device):
    """Waits for the device's queued work (CUDA), so that a timing is complete."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def markdown_table(header, rows):
    """A markdown table: first column left-aligned, the others right-aligned.

    Example
    -------
    >>> print(markdown_table(["system", "PESQ"], [["noisy", "1.50"]]))
    | system | PESQ |
    |---|---:|
    | noisy | 1.50 |
    """
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_results(out_dir, results=None, table=None, results_file="results.json",
                  table_file="table.md"):
    """Writes ``results`` (JSON) and ``table`` (markdown) into ``out_dir``, atomically.

    Returns
    -------
    list of str
        The paths written.

    Example
    -------
    >>> import tempfile
    >>> paths = write_results(tempfile.mkdtemp(), {"a": 1}, "| a |")
    >>> [os.path.basename(p) for p in paths]
    ['results.json', 'table.md']
    """
    os.makedirs(out_dir, exist_ok=True)
    written = []
    if results is not None:
        path = os.path.join(out_dir, results_file)
        atomic_write_text(path, json.dumps(results, indent=2, default=str) + "\n")
        written.append(path)
    if table is not None:
        path = os.path.join(out_dir, table_file)
        atomic_write_text(path, table.rstrip("\n") + "\n")
        written.append(path)
    return written


__all__ = [
    "NAME",
    "SWITCHES",
    "UsageError",
    "add_corpus_arguments",
    "add_device_arguments",
    "add_metric_argument",
    "check_corpus_args",
    "check_threads",
    "exit_status",
    "markdown_table",
    "parse_assignment",
    "parse_list",
    "parse_metrics",
    "parse_named",
    "parse_value",
    "resolve_device",
    "sync",
    "resolve_manifest",
    "usage_error",
    "write_results",
]
