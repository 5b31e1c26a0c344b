"""model: the torch MLP for tabular data, and its artifact (safetensors weights, ONNX export, JSON metadata).

The artifact is three files: `model.safetensors` (weights only; safetensors cannot carry code, so nothing
on the serving path unpickles: the record of truth), `model.onnx` (the same network with its sigmoid,
exported by torch's ONNX exporter for ONNX Runtime: what the server runs by default, no torch needed)
and `model.json` (architecture, feature spec with dtypes and allowed categories, preprocessing state,
class labels, decision threshold, params hash, data md5, and the sha256 of both other files). `load()`
verifies the weights' sha256 before building the network; `mlops.scorer.load_onnx` verifies the ONNX
file's.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as save_weights
from torch import nn

from mlops import files
from mlops.artifact import FORMAT, METADATA, ONNX, WEIGHTS, verify
from mlops.artifact import read_metadata as read_metadata  # re-exported: callers use model.read_metadata
from mlops.errors import ConfigError, ModelNotReady
from mlops.features import Preprocessor
from mlops.scorer import INPUT, Scorer
from mlops.task import OUTPUT as TASK_OUTPUT
from mlops.task import Task

log = logging.getLogger(__name__)

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class MLP(nn.Module):
    """Fully connected network: [Linear -> activation -> Dropout] x len(hidden) -> Linear(outputs): one
    logit per row (binary), one per class (multiclass) or the standardized value (regression).

    Training may pass its own dropout masks to `forward` (see `draw_masks`): drawn for a whole global
    batch from one generator, they let W data-parallel ranks apply exactly the masks one process would
    (mlops.distributed). The `nn.Dropout` modules stay in `net` either way, so the state_dict, the
    safetensors layout and the ONNX export (eval mode: dropout is the identity) do not depend on it.
    """

    def __init__(
        self,
        input_dim: int,
        hidden: list[int],
        activation: str = "relu",
        dropout: float = 0.0,
        outputs: int = 1,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for h in hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation](), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, outputs))
        self.net = nn.Sequential(*layers)
        self.hidden = list(hidden)
        self.dropout = dropout
        self.outputs = outputs

    def _shape(self, out: torch.Tensor) -> torch.Tensor:
        return out.squeeze(-1) if self.outputs == 1 else out

    def draw_masks(self, rows: int, generator: torch.Generator) -> list[torch.Tensor] | None:
        """Inverted-dropout masks for `rows` rows, one [rows, width] tensor per Dropout layer, on CPU.

        Each unit is kept with probability 1 - dropout and then scaled by 1 / (1 - dropout), as
        `nn.Dropout` does. Drawn on CPU from `generator` so every device and every rank that holds the
        same generator state gets the same masks.

        Args:
            rows: the rows of the batch (the global batch under DDP).
            generator: the dedicated dropout generator; advanced by the draw.

        Returns:
            The masks, or None when dropout is 0 (nothing drawn, the generator untouched).
        """
        if self.dropout == 0:
            return None
        keep = 1.0 - self.dropout
        return [torch.empty(rows, h).bernoulli_(keep, generator=generator).div_(keep) for h in self.hidden]

    def forward(self, x: torch.Tensor, masks: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Return one logit per row, shape (rows,), or per row and class, shape (rows, outputs).

        Args:
            x: feature rows [rows, input_dim].
            masks: training only: one dropout mask per Dropout layer ([rows, width], from `draw_masks`,
                on x's device), multiplied in where each Dropout sits instead of drawing masks there.
                Ignored in eval mode, where dropout is the identity.
        """
        if masks is None or not self.training:
            return self._shape(self.net(x))
        if len(masks) != len(self.hidden):
            raise ValueError(f"MLP.forward: {len(masks)} dropout masks for {len(self.hidden)} Dropout layers")
        pending = iter(masks)
        for layer in self.net:
            x = x * next(pending) if isinstance(layer, nn.Dropout) else layer(x)
        return self._shape(x)


class Head(nn.Module):
    """The served function: feature rows -> the task's output (mlops.task): the sigmoid of the logit
    (binary), the softmax over the class logits (multiclass), or the network's standardized value
    mapped back to the target's units, `value * std + mean` (regression)."""

    def __init__(self, net: nn.Module, kind: str = "binary", mean: float = 0.0, std: float = 1.0):
        super().__init__()
        self.net = net
        self.kind = kind
        self.mean = float(mean)
        self.std = float(std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the task's output for each row: shape (rows,), or (rows, classes) for multiclass."""
        out = self.net(x)
        if self.kind == "multiclass":
            return torch.softmax(out, dim=-1)
        if self.kind == "regression":
            return out * self.std + self.mean
        return torch.sigmoid(out)


def head(net: nn.Module, meta: Mapping[str, Any]) -> Head:
    """The served function of `net` for the task in model.json `meta`."""
    kind = Task.from_metadata(dict(meta)).kind
    scale = meta.get("label", {}).get("scale") or {}
    return Head(net, kind, scale.get("mean", 0.0), scale.get("std", 1.0))


def build(architecture: Mapping[str, Any]) -> MLP:
    """Build the network described by model.json's `architecture`."""
    return MLP(
        architecture["input_dim"],
        list(architecture["hidden"]),
        architecture["activation"],
        architecture["dropout"],
        int(architecture.get("outputs", 1)),
    )


def export_onnx(
    net: nn.Module, input_dim: int, path: Path, exporter: str, opset: int, module: Head | None = None
) -> None:
    """Export the served function to ONNX at `path`: input `x` [rows, input_dim] float32, output named
    after the task (`probability` [rows], `probabilities` [rows, classes] or `prediction` [rows]);
    `rows` is a dynamic axis, so any batch size runs.

    Args:
        net: the trained network (put in eval mode); exported with the binary head unless `module`.
        input_dim: feature width.
        path: the .onnx file to write.
        exporter: `torchscript` (torch.onnx.export with dynamo=False: ~0.2 s here) or `dynamo`
            (the torch.export-based exporter, dynamo=True: ~6 s here, most of it imports).
        opset: the ONNX opset (ai.onnx domain) of the exported graph.
        module: the head to export (`head(net, meta)`).
    """
    module = (module or Head(net)).eval()
    output = TASK_OUTPUT[module.kind]
    x = torch.zeros(2, input_dim)
    with warnings.catch_warnings():
        # the TorchScript exporter is deprecated in favour of dynamo, which costs ~30x the time here;
        # both ship with torch and give the same graph for an MLP
        warnings.simplefilter("ignore", DeprecationWarning)
        if exporter == "dynamo":
            program = torch.onnx.export(
                module,
                (x,),
                None,
                dynamo=True,
                input_names=[INPUT],
                output_names=[output],
                dynamic_shapes=({0: torch.export.Dim("rows")},),
                opset_version=opset,
                verbose=False,
            )
            program.save(str(path))
        else:
            torch.onnx.export(
                module,
                (x,),
                str(path),
                dynamo=False,
                input_names=[INPUT],
                output_names=[output],
                dynamic_axes={INPUT: {0: "rows"}, output: {0: "rows"}},
                opset_version=opset,
            )


def save(
    model_dir: Path, net: MLP, metadata: dict[str, Any], exporter: str = "torchscript", opset: int = 18
) -> dict[str, Any]:
    """Write weights, the ONNX export and metadata atomically; the metadata gains both files' sha256.

    Args:
        model_dir: target directory (models/).
        net: the trained network.
        metadata: model.json content without `weights` and `onnx`.
        exporter: `torchscript`, `dynamo` (see `export_onnx`) or `none` (no model.onnx: serve with
            `serve.backend: torch`).
        opset: the ONNX opset of the export.

    Returns:
        The metadata written.
    """
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    # Each file goes to a temp file beside it first; only when all are written do the renames run, back
    # to back (the stack exits last-in first-out: weights, ONNX, then model.json), so an interrupted
    # save (kill -9, full disk) leaves the previous artifact or the new one. Only a kill between those
    # renames, microseconds apart, would mix them, and every reader checks the sha256s in model.json.
    with contextlib.ExitStack() as stack:
        meta_tmp = stack.enter_context(files.atomic_path(model_dir / METADATA))
        onnx_tmp = stack.enter_context(files.atomic_path(model_dir / ONNX)) if exporter != "none" else None
        weights_tmp = stack.enter_context(files.atomic_path(model_dir / WEIGHTS))
        # serialised in memory and written by Python: a full disk is an OSError that names the file
        weights_tmp.write_bytes(save_weights(state, metadata={"format": FORMAT}))
        digest = files.file_digest(weights_tmp)
        onnx = None
        if onnx_tmp is not None:
            try:
                module = head(net, metadata)
                export_onnx(
                    net, int(metadata["architecture"]["input_dim"]), onnx_tmp, exporter, opset, module
                )
            except Exception as e:  # the exporters raise many types; the fix is the same for all
                if isinstance(e, OSError) and e.errno in files.STORAGE_ERRNOS:
                    raise  # the disk, not the exporter: atomic_path names the file
                raise ConfigError(
                    f"train.onnx: the {exporter} exporter cannot export this network at opset {opset} "
                    f"({type(e).__name__}: {str(e)[:200]}); try the other exporter, or set "
                    "train.onnx.exporter: none and serve.backend: torch"
                ) from e
            onnx = {
                "file": ONNX,
                "sha256": files.file_digest(onnx_tmp),
                "opset": opset,
                "exporter": exporter,
                "input": INPUT,
                "output": TASK_OUTPUT[module.kind],
            }
        meta = {**metadata, "format": FORMAT, "weights": {"file": WEIGHTS, "sha256": digest}, "onnx": onnx}
        meta_tmp.write_bytes(files.dumps_json(meta).encode())
    if exporter == "none":
        (model_dir / ONNX).unlink(missing_ok=True)  # a stale export must not pass for this model's
    return meta


@dataclass
class LoadedModel(Scorer):
    """A verified model on torch (`serve.backend: torch`; training-side evaluation)."""

    metadata: dict[str, Any]
    net: MLP
    preprocessor: Preprocessor
    backend: str = "torch"

    def __post_init__(self) -> None:
        self.head = head(self.net, self.metadata).eval()

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The task's outputs (float64, [rows] or [rows, classes]) for float32 feature rows."""
        with torch.inference_mode():
            return self.head(torch.from_numpy(x)).numpy().astype(np.float64)


def load(model_dir: str | Path) -> LoadedModel:
    """Load and verify a model directory.

    Raises:
        ModelNotReady: files missing or unreadable (exit 5, HTTP 503).
        ChecksumMismatch: the weights' sha256 differs from model.json (exit 6).
    """
    model_dir = Path(model_dir)
    meta, weights = verify(model_dir)
    net = build(meta["architecture"])
    try:
        net.load_state_dict(load_file(str(weights)), strict=True)
    except SafetensorError as e:
        raise ModelNotReady(f"{weights}: not a valid safetensors file ({e})") from e
    except (RuntimeError, OSError) as e:
        raise ModelNotReady(f"{weights}: weights do not fit the architecture in model.json ({e})") from e
    net.eval()
    return LoadedModel(meta, net, Preprocessor.from_dict(meta["preprocessing"]))
