"""Shared test set-up.

Before anything imports torch, the torch / torchaudio pair is checked
(:func:`speechbrain_gense.doctor.check_torch_pair`): a mismatched pair stops
the run with one line naming the versions and the fix, instead of an
``undefined symbol`` deep inside torchaudio in every test module.
"""

import pytest

from speechbrain_gense.doctor import check_torch_pair

_PROBLEM = check_torch_pair()
if _PROBLEM is not None:
    pytest.exit(f"broken install: {_PROBLEM}", returncode=3)

import torch  # noqa: E402  (after the check above)

#: Test files that run first (the install checks).
FIRST = ("test_environment.py",)


def pytest_collection_modifyitems(config, items):
    """Runs the install checks before every other test."""
    items.sort(key=lambda item: item.path.name not in FIRST)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """One torch thread for the whole suite.

    The tests run tiny models, where intra-op threads only add
    synchronisation; on a loaded 2-core machine two OpenMP threads can make a
    small op tens of times slower than one.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
