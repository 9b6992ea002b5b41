"""Config values are checked once, when the config is loaded, from the dataclass type hints: types,
ranges and choices, with a one-line ConfigError naming the key."""

from __future__ import annotations

import math
import typing

import pytest

from imagegen.config import TrainConfig, describe, load_config
from imagegen.errors import ConfigError


def load(*overrides: str):
    return load_config(None, ["model.name=pixelcnn", *overrides])


@pytest.mark.parametrize("override, key, says", [
    ("train.batch_size=eight", "train.batch_size", "an integer >= 1"),  # type
    ("train.batch_size=3.5", "train.batch_size", "an integer >= 1"),
    ("train.batch_size=true", "train.batch_size", "an integer"),
    ("train.batch_size=0", "train.batch_size", ">= 1"),  # ranges
    ("train.max_steps=-5", "train.max_steps", ">= 1"),
    ("train.eval_every=0", "train.eval_every", ">= 1"),
    ("train.checkpoint_every=0", "train.checkpoint_every", ">= 1"),
    ("train.lr=-0.003", "train.lr", "> 0"),
    ("train.lr=.nan", "train.lr", "finite"),
    ("train.lr=.inf", "train.lr", "finite"),
    ("train.lr=1e400", "train.lr", "finite"),
    ("train.ema_decay=1", "train.ema_decay", "< 1"),
    ("train.grad_clip=0", "train.grad_clip", "> 0"),
    ("train.seed=4294967296", "train.seed", "<= 4294967295"),
    ("train.seed=-1", "train.seed", ">= 0"),
    ("train.betas=[0.9]", "train.betas", "a list of 2 values"),
    ("train.betas=[0.9, 1.0]", "train.betas", "< 1"),
    ("train.betas=0.9", "train.betas", "a list of 2 values"),
    ("train.optimizer=sgd", "train.optimizer", "one of adamw, adam"),  # choices
    ("train.schedule=linear", "train.schedule", "one of cosine, rsqrt, constant"),
    ("train.mixed_precision=fp8", "train.mixed_precision", "one of no, bf16, fp16"),
    ("data.binarize=yes", "data.binarize", "null or one of threshold, stochastic"),
    ("data.eval_split=dev", "data.eval_split", "one of train, val, test"),
    ("data.val_size=-1", "data.val_size", "null or an integer >= 0"),
    ("data.image_size=0", "data.image_size", ">= 1"),
    ("data.path=5", "data.path", "a string"),
    ("data.download=1", "data.download", "true or false"),
    ("model.name=pixelgan", "model.name", "one of"),
    ("train.num_samples=1000000000", "train.num_samples", "<= 10000"),  # sampled after training began
])
def test_bad_values_are_one_line_naming_the_key(override, key, says):
    with pytest.raises(ConfigError) as e:
        load(override)
    message = str(e.value)
    assert "\n" not in message and message.startswith(f"{key} must be ") and says in message, message


def test_yaml_lax_forms_are_accepted():
    cfg = load("train.lr=3e-4", "train.betas=[0.9, 0.98]", "train.max_steps=1e4",
               "train.mixed_precision=no", "train.grad_clip=null", "train.weight_decay=0")
    t = cfg.train
    assert t.lr == 3e-4 and t.betas == (0.9, 0.98) and t.max_steps == 10_000 and isinstance(t.max_steps, int)
    assert t.mixed_precision == "no" and t.grad_clip is None and isinstance(t.weight_decay, float)


def test_the_dataclass_checks_itself_from_its_type_hints():
    with pytest.raises(ConfigError, match="train.keep_checkpoints must be an integer >= 1"):
        TrainConfig(keep_checkpoints=0)
    hints = typing.get_type_hints(TrainConfig, include_extras=True)
    assert describe(hints["lr"]) == "a finite number > 0"
    assert math.isclose(TrainConfig(lr="1e-2").lr, 0.01)


@pytest.mark.parametrize("text, says", [
    ("model: {name: pixelcnn}\ntrain: 5\n", "the train section must be a mapping"),
    ("model: [1, 2]\n", "the model section must be a mapping"),
    ("model: {name: pixelcnn}\ndata: [a]\n", "the data section must be a mapping"),
    ("- 1\n", "must hold a mapping"),
    ("model: [name: x\n", "is not valid YAML"),
    ("model: {name: pixelcnn}\noptim: {lr: 1}\n", "unknown config section 'optim'"),
    ("model: {name: pixelcnn}\ntrain: {lerning_rate: 1}\n", "unknown key train.lerning_rate"),
])
def test_bad_files(tmp_path, text, says):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=says):
        load_config(path)


def test_unreadable_files(tmp_path):
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(ConfigError, match="not a text file"):
        load_config(binary)
    with pytest.raises(ConfigError, match="not a regular file"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nowhere.yaml")


def test_override_into_a_section_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: {name: pixelcnn}\ntrain: 5\n")
    with pytest.raises(ConfigError, match="the train section is not a mapping"):
        load_config(path, ["train.lr=1"])


def _alias_bomb(levels: int, indent: str) -> str:
    """A YAML list of nested aliases: a few hundred bytes expanding to 9**levels strings (billion laughs)."""
    lines = ['- &a0 ["laugh", "laugh", "laugh", "laugh", "laugh", "laugh", "laugh", "laugh", "laugh"]']
    lines += [f"- &a{k} [" + ", ".join([f"*a{k - 1}"] * 9) + "]" for k in range(1, levels + 1)]
    return "".join(f"{indent}{line}\n" for line in lines)


@pytest.mark.parametrize("head, indent", [("model: {name: pixelcnn}\ntrain:\n  lr:\n", "    "),
                                          ("model:\n  name:\n", "    "),
                                          ("model: {name: pixelcnn}\ntrain:\n", "  ")],
                         ids=["train.lr", "model.name", "the train section"])
def test_a_yaml_alias_bomb_is_one_short_line(tmp_path, head, indent):
    path = tmp_path / "c.yaml"
    path.write_text(head + _alias_bomb(6, indent))  # 531,441 strings: a repr of megabytes (9 levels: GBs)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "\n" not in str(e.value) and len(str(e.value)) < 400, str(e.value)[:400]


def test_deep_nesting_is_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: " + "[" * 50_000)
    with pytest.raises(ConfigError, match="nested too deeply"):
        load_config(path)
