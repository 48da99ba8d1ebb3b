"""Issue 15: memory reuse, recipes and their precedence, model defaults, lookahead, test-time views, airnet."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

import daxiao
from daxiao.cli import build_parser
from daxiao.config import RunConfig, config_from_args
from daxiao.config.recipes import RECIPES
from daxiao.errors import DaxiaoError

SRC = str(Path(__file__).resolve().parents[1] / "src")
GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Minor page faults of 4 forward passes of a small conv net over 16 x 3 x 128 x 128 (activations of 4 MiB,
# after 2 untimed passes): glibc's default maps and unmaps them every pass (~12k faults each); with memory
# reuse the heap's pages are faulted in once and the counted passes take none.
FAULTS = """
import json, resource, sys
def faults():
    import torch
    torch.set_num_threads(1)
    conv = torch.nn.Conv2d
    net = torch.nn.Sequential(conv(3, 16, 3, padding=1), torch.nn.ReLU(), conv(16, 16, 3, padding=1))
    x = torch.randn(16, 3, 128, 128)
    with torch.inference_mode():
        net(x), net(x)
        r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(4):
            net(x)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
"""


def run_py(code: str, tmp_path: Path, **env) -> dict:
    """Run `code` as a script file in a fresh interpreter (a file, so spawned workers can import it)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "DAXIAO_ALLOCATOR"}
    e.update(PYTHONPATH=SRC, **env)
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent(code))
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=e, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="the memory-reuse setting is for glibc's malloc")
def test_reuse_memory_stops_the_page_faults_and_import_daxiao_changes_nothing(tmp_path):
    r = run_py(FAULTS + """
import daxiao, daxiao.models, daxiao.training  # importing must not change the allocator
before = faults()
from daxiao.allocator import reuse_memory
state = reuse_memory()
print(json.dumps({"before": before, "after": faults(), "state": state}))
""", tmp_path)
    assert r["state"] == {"applied": True, "how": "mallopt"}
    assert r["before"] > 4 * 4_000          # 4 MiB buffers = 1k pages each, mapped again every pass
    assert r["after"] < 1_000                # reused


@pytest.mark.skipif(not GLIBC, reason="the memory-reuse setting is for glibc's malloc")
def test_reuse_memory_reaches_dataloader_workers_and_child_processes(tmp_path):
    r = run_py(FAULTS + """
import torch

class Faults(torch.utils.data.Dataset):
    def __len__(self): return 1
    def __getitem__(self, i): return torch.tensor(faults())

def worker(context):
    loader = torch.utils.data.DataLoader(Faults(), num_workers=1, multiprocessing_context=context)
    return int(next(iter(loader))[0])

if __name__ == "__main__":
    from daxiao.allocator import reuse_memory
    reuse_memory()
    print(json.dumps({"forked": worker("fork"), "spawned": worker("spawn")}))
""", tmp_path)
    assert r["forked"] < 1_000, "a forked worker inherits the setting"
    assert r["spawned"] < 1_000, "a spawned worker (and torchrun's ranks) starts with it from the environment"


@pytest.mark.skipif(not GLIBC, reason="the memory-reuse setting is for glibc's malloc")
def test_reuse_memory_can_be_turned_off(tmp_path):
    r = run_py("""
import json
from daxiao.allocator import reuse_memory
print(json.dumps(reuse_memory()))
""", tmp_path, DAXIAO_ALLOCATOR="system")
    assert r == {"applied": False, "how": "DAXIAO_ALLOCATOR=system"}


def parse(*argv: str) -> RunConfig:
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_recipe_precedence_defaults_recipe_yaml_flags(tmp_path):
    cfg = parse("--recipe", "speedrun")
    assert (cfg.model.name, cfg.optim.optimizer, cfg.train.lookahead, cfg.recipe) == ("airnet", "sgd", True, "speedrun")
    assert cfg.data.val_split == RunConfig().data.val_split  # untouched by the recipe: the default
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"recipe": "speedrun", "train": {"epochs": 3, "batch_size": 64}}))
    cfg = parse("--config", str(tmp_path / "c.yaml"), "--batch-size", "32")
    assert (cfg.model.name, cfg.train.epochs, cfg.train.batch_size) == ("airnet", 3, 32)  # recipe < YAML < flag
    with pytest.raises(DaxiaoError, match="recipe must be one of"):
        parse("--recipe", "speedrnu")


def test_recipes_name_only_real_settings():
    for name in RECIPES:
        RunConfig().from_dict({"recipe": name, **RECIPES[name]}).validate()


def test_model_defaults_fill_only_what_nobody_chose(monkeypatch):
    from daxiao.models.registry import _MODELS
    from daxiao.training.runs import with_model_defaults

    info = _MODELS["seed-cnn"]
    assert info.defaults, "seed-cnn carries its own defaults (README models table)"
    cfg = with_model_defaults(parse("--model", "seed-cnn", "--lr", "0.123"))
    assert cfg.optim.lr == 0.123
    for key, value in info.defaults.items():
        if key != "lr":
            assert cfg.to_dict()[_section(key)][key] == value
    cfg = with_model_defaults(parse("--recipe", "speedrun"))  # airnet's defaults lie beneath the recipe
    assert cfg.train.batch_size == RECIPES["speedrun"]["batch_size"]


def test_scratch_defaults_only_when_training_from_random_weights():
    from daxiao.training.runs import apply_model_defaults

    cfg = parse("--model", "mobilenet-v1")
    assert apply_model_defaults(cfg) == {"augment": "light", "epochs": 20}
    assert (cfg.data.augment, cfg.train.epochs) == ("light", 20)
    cfg = parse("--model", "mobilenet-v1", "--epochs", "3")
    assert apply_model_defaults(cfg) == {"augment": "light"} and cfg.train.epochs == 3
    for transfer in (["--pretrained"], ["--weights", "w.safetensors"]):  # transfer keeps the plain defaults
        cfg = parse("--model", "efficientnet-lite0", *transfer)
        assert apply_model_defaults(cfg) == {} and cfg.data.augment == "none"


def _section(key: str) -> str:
    return next(s for s, d in RunConfig().to_dict().items() if isinstance(d, dict) and key in d)


def test_triangle_schedule_is_airbenchs():
    from daxiao.training.optim import triangle

    assert triangle(0, 23, 100) == pytest.approx(0.2)
    assert triangle(23, 23, 100) == pytest.approx(1.0)
    assert triangle(100, 23, 100) == pytest.approx(0.07)
    assert triangle(60, 23, 100) < triangle(40, 23, 100)


def test_tta_flip_averages_the_mirror():
    from daxiao.data import Batch
    from daxiao.training.loop import tta_forward

    torch.manual_seed(0)
    m = daxiao.create_model("airnet", num_classes=10, in_chans=1, input_size=28).eval()
    x = torch.randn(4, 1, 28, 28)
    b = Batch(x, torch.zeros(4, dtype=torch.long), torch.arange(4))
    with torch.no_grad():
        want = 0.5 * (m(x) + m(x.flip(-1)))
        assert torch.allclose(tta_forward(m, b, "flip"), want, atol=1e-5)
        assert torch.allclose(tta_forward(m, b, "none"), m(x), atol=1e-6)
        sym = Batch(x + x.flip(-1), b.targets, b.index)  # a mirror-symmetric image: every view agrees
        assert torch.allclose(tta_forward(m, sym, "flip"), m(sym.inputs), atol=1e-4)
        assert tta_forward(m, b, "flip-shift").shape == (4, 10)


def test_airnet_has_the_timm_interface_at_every_size():
    for size in (8, 28, 32):
        m = daxiao.create_model("airnet", num_classes=7, in_chans=3, input_size=size)
        x = torch.randn(2, 3, size, size)
        assert m(x).shape == (2, 7)
        assert m.forward_head(m.forward_features(x), pre_logits=True).shape == (2, m.num_features)
        m.reset_classifier(3)
        assert m(x).shape == (2, 3) and m.num_classes == 3
        assert m.pretrained_cfg["input_size"] == (3, size, size)
    assert daxiao.create_model("airnet", alpha=2.0, num_classes=10).num_features == 384


def test_lookahead_ends_on_the_average_and_changes_the_result():
    from daxiao.training.ema import Lookahead

    g = torch.Generator().manual_seed(0)
    x = (torch.rand(256, 1, 8, 8, generator=g) * 255).to(torch.uint8)
    y = (x.float().mean((1, 2, 3)) > 127).long()

    def train(callbacks: list) -> dict:
        torch.manual_seed(0)
        model = daxiao.create_model("seed-tiny-cnn", num_classes=2, in_chans=1, input_size=8)
        daxiao.fit(model, x, y, epochs=3, batch_size=32, verbose=False, callbacks=callbacks, precision="fp32")
        return model.state_dict()

    la = Lookahead()
    plain, averaged = train([]), train([la])
    assert la.step == la.total == 3 * 8
    assert all(torch.equal(a, w) for a, w in la.avg), "the model ends holding the running average"
    assert any(not torch.equal(plain[k], averaged[k]) for k in plain)
    assert la.base ** la.every == pytest.approx(0.95 ** 5)


# The bars of the README's models table: `daxiao train --model NAME` (digits, every other setting the
# model's defaults), test accuracy on digits' fixed 20 % test split.
CHEAP_BARS = {"seed-cnn": 0.97, "seed-tiny-cnn": 0.97}
SLOW_BARS = {"airnet": 0.97}


def default_run(name: str, tmp_path: Path) -> float:
    from daxiao.inference.report import evaluate_model
    from daxiao.training.runs import train

    cfg = parse("--model", name, "--project", str(tmp_path))
    result = train(cfg, verbose=False)
    return evaluate_model(result["run_dir"], split="test")["acc"]


@pytest.mark.parametrize("name", CHEAP_BARS)
def test_defaults_meet_the_bar_on_digits(name, tmp_path):
    assert default_run(name, tmp_path) >= CHEAP_BARS[name]


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW_BARS)
def test_defaults_meet_the_bar_on_digits_slow(name, tmp_path):
    assert default_run(name, tmp_path) >= SLOW_BARS[name]
