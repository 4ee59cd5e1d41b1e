import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_torch_thread():
    """Tiny models train much faster on one thread, especially on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
