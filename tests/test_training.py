"""The trainer: exact resume, bf16 on CPU, 2-process data parallel, run-directory safety."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate.state import AcceleratorState
from safetensors.torch import load_file

from imagegen import checkpoint, runstate
from imagegen.data import load_dataset
from imagegen.errors import ImagegenError
from imagegen.metrics import bits_per_dim
from imagegen.training import Trainer, lr_factor
from tests.helpers import tiny_config, tiny_mnist


@pytest.fixture()
def data(tmp_path):
    return tiny_mnist(tmp_path / "mnist.npz")


def _state(trainer):
    return {**{f"model.{k}": v.clone() for k, v in trainer.raw_model.state_dict().items()},
            **{f"ema.{k}": v.clone() for k, v in trainer.ema.state_dict().items()}}


def test_resume_continues_exactly(data, tmp_path):
    straight = Trainer(tiny_config(data), tmp_path / "a", show_progress=False)
    straight.fit()

    interrupted = Trainer(tiny_config(data), tmp_path / "b", show_progress=False)
    for _ in range(3):
        interrupted.train_step()
    interrupted.save()
    interrupted.train_step()  # work after the last checkpoint is lost, as in a crash
    interrupted.close()
    resumed = Trainer(tiny_config(data), tmp_path / "b", resume=True, show_progress=False)
    assert resumed.step == 3
    resumed.fit()

    a, b = _state(straight), _state(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert not torch.equal(a["model.head.weight"], Trainer(tiny_config(data), tmp_path / "c",
                                                           show_progress=False).raw_model.head.weight)


def test_run_directory_is_complete_and_never_overwritten(data, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config(data, sample_every=3), run, show_progress=False).fit()
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"loss", "bpd", "lr", "images_per_s"} <= records[0].keys()
    assert [r["step"] for r in records if "eval_bpd" in r] == [3, 6]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_00000003", "step_00000006"]
    assert (run / "samples" / "step_00000006.png").is_file() and (run / "config.yaml").is_file()
    model = checkpoint.load(run / "model")
    assert checkpoint.read_info(run / "model")["step"] == 6 and model.levels == 256
    with pytest.raises(ImagegenError, match="--resume"):
        Trainer(tiny_config(data), run, show_progress=False)


def _losses(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(x)["loss"] for x in lines if '"loss"' in x]


def test_bf16_mixed_precision_trains_on_cpu_like_fp32(data, tmp_path):
    curves = {}
    for precision in ("no", "bf16"):
        AcceleratorState._reset_state(reset_partial_state=True)
        trainer = Trainer(tiny_config(data, mixed_precision=precision, max_steps=60, lr=1e-2, eval_every=60,
                                      checkpoint_every=60), tmp_path / precision, show_progress=False)
        trainer.fit()
        curves[precision] = _losses(tmp_path / precision)
    fp32, bf16 = (sum(curves[p][-5:]) / 5 for p in ("no", "bf16"))
    assert bf16 < curves["bf16"][0] - 1.0, curves["bf16"]  # uniform over 256 levels: ln 256 = 5.55 nats
    assert abs(bf16 - fp32) < 0.1, (fp32, bf16)
    assert all(p.dtype == torch.float32 for p in trainer.raw_model.parameters())
    x, _ = trainer.batch(0)
    logits = trainer.model(x)  # accelerate runs forward under bf16 autocast and returns float32
    assert torch.equal(logits, logits.bfloat16().float()), "logits were not computed in bf16"


def _gradients_of_first_step(trainer):
    """The gradients the optimiser receives at the first optimiser step."""
    seen = []
    original = trainer.optimizer.step

    def step(*args, **kwargs):
        if trainer.accelerator.sync_gradients:  # accelerate skips the step on other micro-batches
            seen.append([p.grad.clone() for p in trainer.raw_model.parameters()])
        return original(*args, **kwargs)

    trainer.optimizer.step = step
    trainer.train_step()
    assert len(seen) == 1, "the optimiser must step once per accumulated batch"
    return seen[0]


def test_gradient_accumulation_matches_bigger_batch(data, tmp_path):
    # Micro-batches 2k and 2k+1 of size 4 hold the images of global batch k of size 8.
    big = _gradients_of_first_step(Trainer(tiny_config(data, batch_size=8, grad_clip=None), tmp_path / "a",
                                           show_progress=False))
    AcceleratorState._reset_state(reset_partial_state=True)  # one accelerate state per process
    acc = _gradients_of_first_step(Trainer(tiny_config(data, batch_size=4, grad_accum=2, grad_clip=None),
                                           tmp_path / "b", show_progress=False))
    for a, b in zip(big, acc, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-4)


def test_lr_schedule_warmup_then_cosine(data):
    cfg = tiny_config(data, max_steps=100, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1) and lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(55, cfg) == pytest.approx(0.55) and lr_factor(100, cfg) == pytest.approx(0.1)
    cfg.train.schedule = "rsqrt"
    assert lr_factor(39, cfg) == pytest.approx(0.5)


def test_two_process_data_parallel_ranks_end_identical(data, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ACCELERATE_", "RANK", "WORLD_SIZE"))}
    env["OMP_NUM_THREADS"] = "1"
    # torch's launcher (what `accelerate launch --multi_gpu` runs); accelerate picks gloo on CPU.
    with socket.socket() as s:  # a free port, so that concurrent test runs do not collide
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--rdzv-backend", "c10d",
           "--rdzv-endpoint", f"localhost:{port}", "--nproc_per_node", "2",
           str(Path(__file__).parent / "ddp_worker.py"), str(data), str(tmp_path)]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "of 2 done" in result.stdout
    r0, r1 = load_file(tmp_path / "rank0.safetensors"), load_file(tmp_path / "rank1.safetensors")
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    trained = checkpoint.load(tmp_path / "run" / "model")
    assert checkpoint.read_info(tmp_path / "run" / "model")["step"] == 4
    assert trained.head.weight.shape == r0["head.weight"].shape
    # The ranks agree whatever data they see (DDP averages their gradients); that they shard the data
    # shows in the update: 2 processes x batch 4 must train like 1 process x batch 8 on the same images.
    AcceleratorState._reset_state(reset_partial_state=True)
    single = Trainer(tiny_config(data, batch_size=8, max_steps=4, checkpoint_every=2), tmp_path / "single",
                     show_progress=False)
    single.fit()
    for k, v in single.raw_model.state_dict().items():
        torch.testing.assert_close(r0[k], v, atol=1e-5, rtol=1e-4, msg=k)


def test_trainer_evaluates_the_val_split_in_float32(tmp_path):
    """The logged and exported eval bits/dim are those of the exported weights on the configured split,
    computed in float32 by metrics.bits_per_dim, even when training runs in bf16."""
    data = tiny_mnist(tmp_path / "m.npz", n_train=64, n_test=16)
    config = tiny_config(data, max_steps=4, eval_every=4, checkpoint_every=4, eval_images=None,
                         mixed_precision="bf16")
    config.data.val_size = 12
    result = Trainer(config, tmp_path / "run", show_progress=False).fit()
    info = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert info["eval_split"] == "val" and info["val_size"] == 12 and info["eval_bpd"] == result["eval_bpd"]
    model = checkpoint.load(tmp_path / "run" / "model")
    per_split = {s: bits_per_dim(model, load_dataset("mnist", data, s, val_size=12).images)
                 for s in ("val", "test")}
    assert abs(result["eval_bpd"] - per_split["val"]) < 1e-6
    assert abs(result["eval_bpd"] - per_split["test"]) > 1e-3


def test_exported_model_is_the_ema_of_the_trained_weights(data, tmp_path):
    """run/model holds the EMA (decay d) of the weights after each optimiser step, not the last ones."""
    decay = 0.8
    trainer = Trainer(tiny_config(data, ema_decay=decay, max_steps=6, lr=1e-2), tmp_path / "run",
                      show_progress=False)
    after_each_step = []
    step = trainer.train_step

    def recording_step():
        loss = step()
        after_each_step.append({k: v.detach().clone() for k, v in trainer.raw_model.state_dict().items()})
        return loss

    trainer.train_step = recording_step
    trainer.fit()
    expected = after_each_step[0]  # the EMA starts from the weights after the first step
    for weights in after_each_step[1:]:
        expected = {k: decay * expected[k] + (1 - decay) * weights[k] for k in expected}
    exported = checkpoint.load(tmp_path / "run" / "model").state_dict()
    assert exported.keys() == expected.keys()
    for k in expected:
        torch.testing.assert_close(exported[k], expected[k], atol=1e-6, rtol=1e-5, msg=k)
    last = after_each_step[-1]
    assert any((exported[k] - last[k]).abs().max() > 1e-3 for k in last), "the export is the raw weights"


def test_a_diverged_run_stops_before_saving_broken_weights(tmp_path, monkeypatch):
    """A non-finite training loss stops the run at once: no checkpoint or model of that step is written."""
    import imagegen.training as training
    from imagegen.errors import NonFiniteError

    data = tiny_mnist(tmp_path / "m.npz")
    config = tiny_config(data, max_steps=6, checkpoint_every=1)
    trainer = Trainer(config, tmp_path / "run", show_progress=False)
    real = training.nll_loss
    monkeypatch.setattr(training, "nll_loss", lambda logits, x: real(logits, x) * (
        float("nan") if trainer.step == 2 else 1.0))
    with pytest.raises(NonFiniteError, match="step 3"):
        trainer.fit()
    trainer.close()
    assert [p.name for p in trainer.checkpoints()] == ["step_00000001", "step_00000002"]


@pytest.mark.parametrize("model, says", [
    ({"levels": 2}, "model.levels is 2 but the data has 256 levels"),
    ({"num_classes": 3}, "model.num_classes is 3 but the data's labels go up to 9"),
])
def test_a_model_smaller_than_its_data_is_refused_before_the_run_starts(data, tmp_path, model, says):
    from imagegen.errors import ConfigError

    config = tiny_config(data)
    config.model.update(model)  # would fail at the first step: an index beyond the head or the embedding
    with pytest.raises(ConfigError, match=says):
        Trainer(config, tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run").exists()


def test_the_best_eval_is_exported_as_best_and_patience_stops_the_run(data, tmp_path, monkeypatch):
    """RUN/best holds the eval weights of the lowest eval so far; with train.patience the run stops after
    that many evals without a new best, and a resume of the stopped run trains nothing more."""
    evals = iter([3.0, 2.0, 2.5, 2.4, 1.0])  # evals at steps 2, 4, 6, 8: bests at 2 and 4, then none
    monkeypatch.setattr(Trainer, "evaluate", lambda self: next(evals))
    run = tmp_path / "run"
    config = tiny_config(data, max_steps=20, eval_every=2, checkpoint_every=2, keep_checkpoints=9, patience=2)
    trainer = Trainer(config, run, show_progress=False)
    exported_at = {}
    export = trainer.export

    def recording_export(name="model"):
        exported_at.setdefault(name, []).append(trainer.step)
        return export(name)

    trainer.export = recording_export
    result = trainer.fit()
    assert trainer.step == 8 and result == {"step": 8, "eval_bpd": 2.4}  # 2 evals after the best at 4
    assert exported_at["best"] == [2, 4]
    best = json.loads((run / "best" / "config.json").read_text())
    assert (best["step"], best["eval_bpd"]) == (4, 2.0)
    assert checkpoint.read_info(run / "model")["step"] == 8
    ema = runstate.read(run / "checkpoints" / "step_00000004").ema  # the AveragedModel's: module.<name>
    ema = {k.removeprefix("module."): v for k, v in ema.items() if k.startswith("module.")}
    torch.testing.assert_close(checkpoint.load(run / "best").state_dict(), ema)
    resumed = Trainer(config, run, resume=True, show_progress=False)
    resumed.fit()
    assert resumed.step == 8 and resumed.best == {"step": 4, "eval_bpd": 2.0}
