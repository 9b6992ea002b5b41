import pytest
import torch


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """accelerate keeps process-wide state; each test's Trainer starts from a clean one."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(autouse=True, scope="session")
def _two_threads():
    torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _data_root(tmp_path_factory, monkeypatch):
    """Datasets looked for without a path, and shared memory-mapped copies, go to a fresh folder (also
    for the commands tests run), never to the user's cache."""
    monkeypatch.setenv("IMAGEGEN_DATA", str(tmp_path_factory.mktemp("imagegen_data")))
