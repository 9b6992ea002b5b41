"""Run by tests/test_training.py under `accelerate launch --num_processes 2`: trains a few steps,
then every rank writes its final weights to OUT/rank<r>.safetensors."""

import sys
from pathlib import Path

from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imagegen.training import Trainer  # noqa: E402
from tests.helpers import tiny_config  # noqa: E402

data, out = Path(sys.argv[1]), Path(sys.argv[2])
trainer = Trainer(tiny_config(data, max_steps=4, checkpoint_every=2), out / "run", show_progress=False)
trainer.fit()
rank = trainer.accelerator.process_index
weights = {k: v.contiguous() for k, v in trainer.raw_model.state_dict().items()}
save_file(weights, out / f"rank{rank}.safetensors")
print(f"rank {rank} of {trainer.accelerator.num_processes} done")
