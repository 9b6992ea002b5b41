"""The random-generator state a training process carries from step to step, as tensors: torch's CPU
generator and, where one is in use, the current CUDA or MPS device's. (Batch order and stochastic
binarization have their own seeded generators; these drive dropout and anything else drawn from
torch's default generators. Python's ``random`` and NumPy's are not used in training.)"""

from __future__ import annotations

import torch


def capture() -> dict[str, torch.Tensor]:
    """This process's generator states: ``{"cpu": uint8 (n,), "cuda"|"mps": uint8 (m,)}``."""
    state = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    elif torch.backends.mps.is_available():
        state["mps"] = torch.mps.get_rng_state()
    return state


def restore(state: dict[str, torch.Tensor]) -> list[str]:
    """Set the generators ``capture`` returned; returns the names of states this process has no
    generator for (e.g. a CUDA state resumed on a CPU)."""
    unused = []
    for name, value in state.items():
        value = value.to("cpu", torch.uint8)
        if name == "cpu":
            torch.set_rng_state(value)
        elif name == "cuda" and torch.cuda.is_available():
            torch.cuda.set_rng_state(value)
        elif name == "mps" and torch.backends.mps.is_available():
            torch.mps.set_rng_state(value)
        else:
            unused.append(name)
    return unused
