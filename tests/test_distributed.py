"""distributed: `mlops train` under torchrun (DDP, gloo on CPU) equals single-process training, dropout
included (each rank applies its rows of the global batch's masks), records how it was trained, and
refuses impossible settings with exit 2 before starting any process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ruamel.yaml import YAML
from safetensors.torch import load_file

from mlops import distributed
from mlops import model as model_lib
from mlops.config import load_params
from mlops.errors import ConfigError


def _workspace(pipeline, root: Path, **train: object) -> Path:
    """A copy of the pipeline's processed data with params.yaml's `train` section edited."""
    root.mkdir(parents=True)
    shutil.copytree(pipeline.processed, root / "data/processed")
    yaml = YAML()
    data = yaml.load(pipeline.params.read_text())
    for key, value in train.items():
        if key == "nproc_per_node":
            data["train"]["distributed"]["nproc_per_node"] = value
        else:
            data["train"][key] = value
    with (root / "params.yaml").open("w") as f:
        yaml.dump(data, f)
    return root


REPO = Path(__file__).resolve().parents[1]


def _train(ws: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`mlops train` as dvc.yaml runs it, in its own process (torchrun needs a real argv)."""
    return subprocess.run(
        [sys.executable, "-m", "mlops", "--params", "params.yaml", "train"]
        + ["--data-dir", "data/processed", "--model-dir", "models"],
        cwd=ws,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def _max_abs_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """The largest absolute difference between two state dicts with the same keys, over every tensor."""
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


# slow: two `mlops train` runs with the demo settings, one of them under torchrun (~20 s)
@pytest.mark.slow
def test_two_ddp_processes_train_the_same_weights_as_one(pipeline, tmp_path):
    # the shipped demo settings: dropout 0.1 (each rank applies its rows of the global batch's masks),
    # up to 40 epochs with early stopping, batch 64 (4,9xx rows leave a short last batch, which must
    # match too). Dropout 0 draws no masks (test_dropout_masks_are_inverted_dropout_...) and is the
    # same loop otherwise.
    one = _workspace(pipeline, tmp_path / "one", nproc_per_node=1)
    two = _workspace(pipeline, tmp_path / "two", nproc_per_node=2)
    assert load_params(two / "params.yaml").train.dropout == 0.1
    for ws in (one, two):
        done = _train(ws)
        assert done.returncode == 0, done.stderr[-3000:]
    a, b = (load_file(str(ws / "models/model.safetensors")) for ws in (one, two))
    diff = _max_abs_diff(a, b)
    assert diff <= 1e-5, f"2 processes vs 1: weights differ by up to {diff:.3g}"
    meta_one, meta_two = (json.loads((ws / "models/model.json").read_text()) for ws in (one, two))
    assert meta_one["training"]["epochs_run"] == meta_two["training"]["epochs_run"]
    assert meta_one["training"]["best_epoch"] == meta_two["training"]["best_epoch"]
    assert {k: meta_two["training"][k] for k in ("world_size", "backend", "device")} == {
        "world_size": 2,
        "backend": "gloo",
        "device": "cpu",
    }
    assert {k: meta_one["training"][k] for k in ("world_size", "backend", "device")} == {
        "world_size": 1,
        "backend": None,
        "device": "cpu",
    }
    # only rank 0 writes: one model directory with exactly the artifact files, one MLflow run logged
    assert sorted(p.name for p in (two / "models").iterdir()) == sorted(
        p.name for p in (one / "models").iterdir()
    )


def _ranks(world: int) -> list[distributed.Context]:
    return [distributed.Context(world, r, r, "gloo", torch.device("cpu")) for r in range(world)]


@pytest.mark.parametrize("rows", [64, 7])  # a full global batch and a short last one (odd: unequal shards)
def test_each_rank_applies_its_rows_of_the_single_process_dropout_masks(rows):
    # per-rank masks (each rank drawing masks for its own rows only) fail this: rank 1 would apply the
    # first rows of its own draw, not the odd rows of the global batch's masks
    net = model_lib.MLP(5, [8, 4], "relu", 0.1)
    single = distributed.Context(1, 0, 0, None, torch.device("cpu"))
    gens = [distributed.dropout_generator(42) for _ in range(3)]
    for _ in range(3):  # consecutive batches: every rank's generator advances as the single process's
        want = distributed.batch_masks(net, rows, gens[0], single)
        got = [distributed.batch_masks(net, rows, g, c) for g, c in zip(gens[1:], _ranks(2), strict=True)]
        assert want is not None and len(want) == 2
        for layer, mask in enumerate(want):
            assert mask.shape == (rows, net.hidden[layer])
            assert torch.equal(got[0][layer], mask[0::2]) and torch.equal(got[1][layer], mask[1::2])
    # the rows a rank trains on get the logits one process computes for them
    x = torch.randn(rows, 5)
    net.train()
    full = net(x, want)
    for rank, c in enumerate(_ranks(2)):
        mine = distributed.shard(torch.arange(rows), c)
        torch.testing.assert_close(net(x[mine], got[rank]), full[mine])


def test_dropout_masks_are_inverted_dropout_from_the_seed_and_none_without_dropout():
    net = model_lib.MLP(5, [256, 128], "relu", 0.1)
    masks = net.draw_masks(512, distributed.dropout_generator(42))
    assert masks is not None
    again = net.draw_masks(512, distributed.dropout_generator(42))
    assert all(torch.equal(m, n) for m, n in zip(masks, again, strict=True))  # a function of the seed
    other = net.draw_masks(512, distributed.dropout_generator(43))
    assert not torch.equal(masks[0], other[0])
    for m in masks:  # keep with probability 0.9, kept units scaled by 1 / 0.9 (as nn.Dropout)
        assert m.device.type == "cpu" and m.dtype == torch.float32
        assert m.unique().tolist() == [0.0, pytest.approx(1 / 0.9)]
        assert float((m > 0).float().mean()) == pytest.approx(0.9, abs=0.01)
    # the masks are multiplied in where each Dropout sits
    x = torch.randn(512, 5)
    lin1, act1, _, lin2, act2, _, out = net.net
    want = out(act2(lin2(act1(lin1(x)) * masks[0])) * masks[1]).squeeze(-1)
    torch.testing.assert_close(net.train()(x, masks), want)
    # eval mode ignores masks (dropout is the identity: the served and exported function)
    torch.testing.assert_close(net.eval()(x, masks), net(x))
    # dropout 0 draws nothing: no masks, the generator untouched
    gen = distributed.dropout_generator(42)
    state = gen.get_state()
    assert model_lib.MLP(5, [8], "relu", 0.0).draw_masks(64, gen) is None
    assert torch.equal(gen.get_state(), state)
    # the network's files do not change: the same state_dict keys as before masks existed
    assert list(net.state_dict()) == [f"net.{i}.{w}" for i in (0, 3, 6) for w in ("weight", "bias")]


# slow: `mlops train` in a fresh interpreter (~4 s)
@pytest.mark.slow
def test_world_size_that_does_not_divide_the_batch_is_exit_2_before_any_process(pipeline, tmp_path):
    ws = _workspace(pipeline, tmp_path / "ws", nproc_per_node=3, batch_size=64)
    done = _train(ws)
    assert done.returncode == 2, done.stderr
    assert "train.batch_size 64 is not divisible by the world size 3" in done.stderr
    assert "torchrun" not in done.stderr.lower().split("error:")[0]  # refused before launching
    assert not (ws / "models").exists()


# slow: `mlops train` in a fresh interpreter (~4 s)
@pytest.mark.slow
def test_cuda_without_a_gpu_is_exit_2_naming_the_key(pipeline, tmp_path):
    ws = _workspace(pipeline, tmp_path / "ws", device="cuda")
    done = _train(ws, CUDA_VISIBLE_DEVICES="")  # no GPU visible, on any machine
    assert done.returncode == 2, done.stderr
    assert "train.device: cuda" in done.stderr and "no CUDA device" in done.stderr
    assert not (ws / "models").exists()


def test_rank_environment_is_read_and_checked(params):
    p = params.train
    ctx = distributed.init(p, env={})
    assert (ctx.world_size, ctx.rank, ctx.backend, ctx.device.type) == (1, 0, None, "cpu")
    assert ctx.is_main
    with pytest.raises(ConfigError, match="RANK is not"):
        distributed.init(p, env={"WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="WORLD_SIZE='two' is not an integer"):
        distributed.init(p, env={"WORLD_SIZE": "two", "RANK": "0", "LOCAL_RANK": "0"})
    # a world of one (torchrun --nproc-per-node 1) trains like a single process, no process group
    ctx = distributed.init(p, env={"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"})
    assert (ctx.world_size, ctx.backend) == (1, None)
    nccl = p.model_copy(update={"distributed": p.distributed.model_copy(update={"backend": "nccl"})})
    with pytest.raises(ConfigError, match="backend: nccl needs train.device cuda"):
        distributed.init(nccl, env={"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"})


def test_shard_takes_every_world_size_th_row_of_the_global_batch():
    rows = torch.arange(7)
    ranks = [distributed.Context(2, r, r, "gloo", torch.device("cpu")) for r in (0, 1)]
    parts = [distributed.shard(rows, c).tolist() for c in ranks]
    assert parts == [[0, 2, 4, 6], [1, 3, 5]]
    assert sorted(parts[0] + parts[1]) == rows.tolist()


def test_launch_is_wanted_only_outside_a_torchrun_rank(params):
    p = params.train
    two = p.model_copy(update={"distributed": p.distributed.model_copy(update={"nproc_per_node": 2})})
    assert not distributed.wants_launch(p, env={})
    assert distributed.wants_launch(two, env={})
    assert not distributed.wants_launch(two, env={"WORLD_SIZE": "2"})


def test_distributed_params_are_typed(pipeline, tmp_path):
    ws = _workspace(pipeline, tmp_path / "ws", nproc_per_node=0)
    with pytest.raises(ConfigError, match=r"train\.distributed\.nproc_per_node"):
        load_params(ws / "params.yaml")
