"""Shared test set-up."""

import pytest
import torch


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
