"""A saved model read whole, before anything is built from it: its config.json and verified
weights, and those of the members it names (an ensemble's). A missing, truncated or garbled file
is an error that names it and says how to recover (never a safetensors or JSON traceback), and
it comes before any model object exists: :func:`pipeline.modeling.bundle.build_star_model`
builds from what was read here, from memory."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.artifacts import MODEL_WEIGHTS, WEIGHTS_SHA256, read_tensors, verify_checksum
from pipeline.errors import CorruptArtifactError, DoubanError
from pipeline.modeling.spec import read_config, retrain_hint

TORCH_KINDS = ("finetune",)  # weights a torch module loads as they are (bf16 has no numpy type)


@dataclass
class SavedModel:
    """One model directory as read: ``models/<name>/`` with its config and weights."""

    path: Path
    config: dict[str, Any]
    tensors: dict[str, Any]  # numpy arrays; torch tensors for TORCH_KINDS
    hint: str  # how to rebuild it, for what building it finds wrong
    members: list[SavedModel]  # an ensemble's, read before it is built

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def kind(self) -> str | None:
        return self.config.get("kind")


def read_saved_model(
    models_dir: Path, name: str, config: dict[str, Any] | None = None
) -> SavedModel:
    """Model ``name`` of ``models_dir`` with every member it names (``config``: its
    config.json, when the caller has read it)."""
    path = models_dir / name
    hint = retrain_hint(path)
    config = config if config is not None else read_config(models_dir, name)
    weights = path / MODEL_WEIGHTS
    try:
        verify_checksum(weights, config.get(WEIGHTS_SHA256), hint)
        tensors = read_tensors(weights, torch=config.get("kind") in TORCH_KINDS)
    except DoubanError:
        raise
    except Exception as err:  # SafetensorError (truncated, not safetensors), OSError (missing)
        raise CorruptArtifactError(f"model weights {weights} cannot be read ({err})",
                                   hint=hint) from err  # fmt: skip
    members = [read_saved_model(models_dir, m) for m in config.get("members", [])]
    return SavedModel(path, config, tensors, hint, members)
