import pytest
import torch


@pytest.fixture(scope="module")
def one_torch_thread():
    """For tests of tiny tensors: on two shared cores torch's thread pool costs more than it gives."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
