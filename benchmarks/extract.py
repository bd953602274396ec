"""Feature extraction throughput: a naive loop against the project's ``encode_texts``.

The same real reviews, the same encoder, one process: (a) naive: batches of 32 in file order,
padded to the longest in the batch, fp32, ``torch.no_grad``; (b) ``encode_texts``: length-sorted
batches under a padded-token budget, every hidden state pooled. Reports reviews/s, tokens/s, the
speed-up, the agreement of the pooled last-layer means, and the achieved GFLOP/s against a plain
fp32 matmul measured in the same run (the practical ceiling). Then the runtimes the feature stage
uses on a CPU since ONNX Runtime took over: (c) ``onnx fp32`` and (d) ``onnx int8`` (the CPU
default, :func:`pipeline.encoding.onnx_encoder.quantize_onnx`), each against (b), with the
cosine of their pooled vectors to torch's; and, on labelled dmsc_sample reviews (``--stars N``
train + N/4 test), what int8 does to stars: a logistic regression on the last layer's pooled
vectors (the ``pooled_lr`` baseline) trained on fp32 features, scoring the test reviews'
fp32 and int8 vectors (the same model: stars agree?) and one trained on int8 features (its own
accuracy). Optional torch variants, reported separately (``--variants mkl,int8,bf16``): ``mkl``,
encode_texts with the stock Linear layers; ``int8``, torch's dynamic int8 Linear layers;
``bf16``, bf16 weights.

    python benchmarks/extract.py [--n 2000] [--threads 2] [--token-budget N] [--stars 4000]
                                 [--variants ...]

Writes benchmarks/results/extract.json and prints a table.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from rich.table import Table

from pipeline.artifacts import write_json
from pipeline.config import FeatureSettings
from pipeline.encoding.encode import TorchEncoder, accelerate_for_cpu, encode_texts
from pipeline.encoding.load import EMBEDDED_ENCODER, Encoder, load_encoder, resolve_encoder
from pipeline.encoding.tokens import count_tokens, default_token_budget

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "dmsc_sample.csv"
RESULTS = Path(__file__).resolve().parent / "results" / "extract.json"
NAIVE_BATCH = 32
TOLERANCE = 1e-3  # max abs difference of pooled last-layer means against the naive fp32 loop

console = Console()


def load_reviews(n: int, seed: int = 0) -> list[str]:
    """``n`` cleaned, non-empty real reviews, a fixed random sample kept in file order."""
    if not DATA.exists():
        raise SystemExit(f"{DATA} not found: the benchmark needs the shared real reviews")
    try:
        from pipeline.data.text import clean_text
    except ImportError:  # the cleaner is another stage's module; raw text still benchmarks
        clean_text = str.strip
    comments = pd.read_csv(DATA, usecols=["Comment"])["Comment"].dropna().map(clean_text)
    comments = comments[comments.str.len() > 0]
    return comments.sample(n, random_state=seed).sort_index().tolist()


def bert_flops(lengths: np.ndarray, config: Any) -> float:
    """FLOPs of a BERT encoder forward over unpadded sequences: the dense layers (QKV, attention
    output, FFN) cost 2 x their weights per token, attention scores and mixing 4 x d per pair."""
    d, ffn, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    dense = 2 * (4 * d * d + 2 * d * ffn) * lengths.sum()
    attention = 4 * d * (lengths.astype(np.float64) ** 2).sum()
    return float(layers * (dense + attention))


def timed(fn: Any, *args: Any) -> tuple[Any, tuple[float, float]]:
    """Result, wall seconds and process CPU seconds (the latter resists a busy shared CPU)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, (time.perf_counter() - wall, time.process_time() - cpu)


def matmul_gflops(size: int = 2048, repeats: int = 10) -> tuple[float, float]:
    """Plain fp32 matmul throughput, per wall second and per CPU second: what the encoder's
    matmuls could at best achieve here."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)
    _, (wall, cpu) = timed(lambda: [torch.matmul(a, b) for _ in range(repeats)])
    flops = 2 * size**3 * repeats
    return flops / wall / 1e9, flops / cpu / 1e9


def naive_pooled(encoder: Encoder, texts: list[str], max_length: int) -> tuple[np.ndarray, int]:
    """The straightforward loop: returns last-layer mean-pooled vectors and padded tokens run."""
    pooled, padded = [], 0
    with torch.no_grad():
        for start in range(0, len(texts), NAIVE_BATCH):
            batch = encoder.tokenizer(
                [encoder.spec.prefix + t for t in texts[start : start + NAIVE_BATCH]],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            hidden = encoder.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
            padded += batch["input_ids"].numel()
    return np.concatenate(pooled), padded


def project_pooled(encoder: Encoder, texts: list[str], fs: FeatureSettings) -> np.ndarray:
    """What ``douban features`` runs (token_budget None: the device's default)."""
    results = encode_texts(
        encoder,
        texts,
        token_layers=[-1],
        max_length=fs.max_length,
        token_budget=fs.token_budget,
    )
    return np.stack([r.pooled_mean[-1] for r in results])


def rates(
    times: tuple[float, float], n_reviews: int, n_tokens: int, flops: float
) -> dict[str, float]:
    seconds, cpu_seconds = times
    return {
        "seconds": round(seconds, 3),
        "cpu_seconds": round(cpu_seconds, 3),
        "reviews_per_s": round(n_reviews / seconds, 1),
        "tokens_per_s": round(n_tokens / seconds, 1),
        "useful_gflops": round(flops / seconds / 1e9, 1),
    }


def onnx_rows(
    texts: list[str],
    reference: np.ndarray,
    fs: FeatureSettings,
    threads: int,
    n_tokens: int,
    flops: float,
    torch_seconds: float,
) -> dict[str, Any]:
    """ONNX Runtime fp32 and int8 over the same texts: speed, speed-up over torch's
    encode_texts and pooled cosine to it (every hidden state pooled, as the store keeps)."""
    from pipeline.encoding.onnx_encoder import load_onnx_encoder

    spec = resolve_encoder(EMBEDDED_ENCODER)
    rows = {}
    for precision in ("fp32", "int8"):
        encoder = load_onnx_encoder(spec, [-1], threads=threads, precision=precision)
        budget = fs.token_budget or default_token_budget("cpu", threads, fs.max_length)
        run = functools.partial(
            encoder.encode_texts, token_layers=[-1], max_length=fs.max_length, token_budget=budget
        )
        run(texts[:256])
        encoded, times = timed(run, texts)
        pooled = np.stack([r.pooled_mean[-1] for r in encoded])
        rows[f"onnx {precision}"] = {
            **rates(times, len(texts), n_tokens, flops),
            "x_torch": round(torch_seconds / times[0], 2),
            **agreement(pooled, reference),
        }
    return rows


def agreement(pooled: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    cosine = (
        (pooled * reference).sum(1)
        / np.linalg.norm(pooled, axis=1)
        / np.linalg.norm(reference, axis=1)
    )
    return {
        "mean_cosine": round(float(cosine.mean()), 5),
        "min_cosine": round(float(cosine.min()), 5),
        "max_abs_diff": float(np.abs(pooled - reference).max()),
    }


def star_agreement(n_train: int, threads: int, seed: int = 0) -> dict[str, Any]:
    """Stars from int8 against fp32 features on labelled real reviews (see the docstring)."""
    from sklearn.linear_model import LogisticRegression

    from pipeline.data.text import clean_text
    from pipeline.encoding.onnx_encoder import load_onnx_encoder

    rows = pd.read_csv(DATA, usecols=["Comment", "Star"]).dropna()
    rows = rows.assign(text=rows["Comment"].map(clean_text))
    rows = rows[rows["text"].str.len() > 0].sample(n_train + n_train // 4, random_state=seed)
    texts, stars = rows["text"].tolist(), rows["Star"].to_numpy()
    spec = resolve_encoder(EMBEDDED_ENCODER)
    pooled = {}
    for precision in ("fp32", "int8"):
        encoder = load_onnx_encoder(spec, [-1], threads=threads, precision=precision)
        encoded = encoder.encode_texts(texts, token_layers=[-1], max_length=256, token_budget=2048)
        pooled[precision] = np.stack([r.pooled_mean[-1] for r in encoded])
    train, test = slice(0, n_train), slice(n_train, None)
    fit = {
        p: LogisticRegression(max_iter=3000, C=0.5).fit(x[train], stars[train])
        for p, x in pooled.items()
    }
    fp32_stars = fit["fp32"].predict(pooled["fp32"][test])
    same_model_int8 = fit["fp32"].predict(pooled["int8"][test])
    own_int8 = fit["int8"].predict(pooled["int8"][test])
    exact = {
        "fp32": float((fp32_stars == stars[test]).mean()),
        "int8": float((own_int8 == stars[test]).mean()),
    }
    return {
        "train_reviews": n_train,
        "test_reviews": len(stars[test]),
        "same_model_agreement": round(float((same_model_int8 == fp32_stars).mean()), 4),
        "own_model_agreement": round(float((own_int8 == fp32_stars).mean()), 4),
        "exact_fp32": round(exact["fp32"], 4),
        "exact_int8": round(exact["int8"], 4),
        "exact_difference_points": round(100 * (exact["int8"] - exact["fp32"]), 2),
        **agreement(pooled["int8"], pooled["fp32"]),
    }


def variant_encoder(encoder: Encoder, name: str) -> Encoder:
    """A variant of the stock (not accelerated) encoder, sharing nothing it modifies."""
    if name == "mkl":
        return encoder
    if name == "int8":
        model = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(encoder.model), {torch.nn.Linear}, dtype=torch.qint8
        )
    elif name == "bf16":
        model = copy.deepcopy(encoder.model).to(torch.bfloat16)
    else:
        raise SystemExit(f"unknown variant {name!r}: use mkl, int8 and/or bf16")
    return dataclasses.replace(encoder, model=model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="reviews")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--encoder", default=EMBEDDED_ENCODER)
    parser.add_argument("--token-budget", type=int, default=None, help="default: the device's")
    parser.add_argument("--variants", default="", help="comma list of mkl, int8, bf16")
    parser.add_argument("--stars", type=int, default=4000, help="labelled train reviews (0: skip)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    fs = FeatureSettings(token_budget=args.token_budget)
    texts = load_reviews(args.n)
    encoder = load_encoder(args.encoder, attn_implementation="sdpa")
    project_encoder = accelerate_for_cpu(load_encoder(args.encoder, attn_implementation="sdpa"))
    lengths = count_tokens(TorchEncoder(encoder), texts, fs.max_length)
    n_tokens, flops = int(lengths.sum()), bert_flops(lengths, encoder.model.config)
    console.print(f"{len(texts)} reviews, {n_tokens} tokens, {args.threads} threads")

    ceilings = [matmul_gflops()]
    naive_pooled(encoder, texts[:NAIVE_BATCH], fs.max_length)  # warm-up
    project_pooled(project_encoder, texts[:256], fs)
    (naive, padded), naive_t = timed(naive_pooled, encoder, texts, fs.max_length)
    project, project_t = timed(project_pooled, project_encoder, texts, fs)
    ceilings.append(matmul_gflops())
    ceiling, ceiling_cpu = (max(c[i] for c in ceilings) for i in (0, 1))

    result: dict[str, Any] = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "threads": args.threads,
            "torch": torch.__version__,
        },
        "encoder": encoder.spec.name,
        "token_budget": args.token_budget or "device default",
        "reviews": len(texts),
        "tokens": n_tokens,
        "mean_tokens_per_review": round(n_tokens / len(texts), 1),
        "naive_padding_fraction": round(1 - n_tokens / padded, 3),
        "matmul_fp32_gflops": round(ceiling, 1),
        "matmul_fp32_gflops_per_cpu_s": round(ceiling_cpu, 1),
        "naive": rates(naive_t, len(texts), n_tokens, flops),
        "project": rates(project_t, len(texts), n_tokens, flops),
        "max_abs_diff": float(np.abs(project - naive).max()),
        "variants": {},
    }
    result["speedup"] = round(naive_t[0] / project_t[0], 2)
    result["speedup_cpu_time"] = round(naive_t[1] / project_t[1], 2)
    result["fraction_of_matmul"] = round(result["project"]["useful_gflops"] / ceiling, 3)
    result["fraction_of_matmul_cpu_time"] = round(flops / project_t[1] / 1e9 / ceiling_cpu, 3)
    result["goals"] = {
        "speedup_at_least_3.5": result["speedup"] >= 3.5,
        "fraction_of_matmul_at_least_0.4": result["fraction_of_matmul"] >= 0.4,
        "pooled_within_tolerance": result["max_abs_diff"] < TOLERANCE,
    }
    result["runtimes"] = onnx_rows(texts, project, fs, args.threads, n_tokens, flops, project_t[0])
    for row in result["runtimes"].values():
        row["fraction_of_matmul"] = round(row["useful_gflops"] / ceiling, 3)
    if args.stars:
        result["int8_stars"] = star_agreement(args.stars, args.threads)
    for name in filter(None, args.variants.split(",")):
        variant = variant_encoder(encoder, name)
        project_pooled(variant, texts[:256], fs)
        pooled, times = timed(project_pooled, variant, texts, fs)
        cosine = (
            (pooled * naive).sum(1) / np.linalg.norm(pooled, axis=1) / np.linalg.norm(naive, axis=1)
        )
        result["variants"][name] = {
            **rates(times, len(texts), n_tokens, flops),
            "speedup": round(naive_t[0] / times[0], 2),
            "max_abs_diff": float(np.abs(pooled - naive).max()),
            "min_cosine": float(cosine.min()),
            "within_tolerance": bool(np.abs(pooled - naive).max() < TOLERANCE),
        }
    write_json(RESULTS, result)
    print_table(result)
    console.print(f"written to {RESULTS}")


def print_table(result: dict[str, Any]) -> None:
    table = Table(title=f"feature extraction, {result['reviews']} reviews ({result['encoder']})")
    columns = ("path", "reviews/s", "tokens/s", "useful GFLOP/s", "x naive", "x naive (CPU s)")
    for column in (*columns, "max |diff|"):
        table.add_column(column, justify="right")
    rows = {"naive (32, file order, fp32)": result["naive"], "encode_texts": result["project"]}
    rows |= result.get("runtimes", {})
    rows |= {f"variant {k}": v for k, v in result["variants"].items()}
    naive = result["naive"]
    for label, r in rows.items():
        diff = r.get("max_abs_diff", result["max_abs_diff"] if label == "encode_texts" else 0.0)
        table.add_row(
            label,
            f"{r['reviews_per_s']:.1f}",
            f"{r['tokens_per_s']:.0f}",
            f"{r['useful_gflops']:.1f}",
            f"{naive['seconds'] / r['seconds']:.2f}",
            f"{naive['cpu_seconds'] / r['cpu_seconds']:.2f}",
            f"{diff:.2e}",
        )
    console.print(table)
    console.print(
        f"matmul ceiling {result['matmul_fp32_gflops']} GFLOP/s; encode_texts reaches "
        f"{result['fraction_of_matmul']:.0%} of it ({result['fraction_of_matmul_cpu_time']:.0%} "
        "by CPU time); naive batches were "
        f"{result['naive_padding_fraction']:.0%} padding; goals: {result['goals']}"
    )
    for label, r in result.get("runtimes", {}).items():
        console.print(
            f"{label}: {r['x_torch']:.2f}x encode_texts (torch), {r['fraction_of_matmul']:.0%} of "
            f"the fp32 matmul ceiling, pooled cosine to torch {r['mean_cosine']:.4f} "
            f"(min {r['min_cosine']:.4f})"
        )
    if "int8_stars" in result:
        s = result["int8_stars"]
        console.print(
            f"int8 stars on {s['test_reviews']} test reviews: the fp32-trained model gives the "
            f"same star to int8 features on {s['same_model_agreement']:.1%}; a model trained on "
            f"int8 agrees with the fp32 one on {s['own_model_agreement']:.1%}; exact accuracy "
            f"{s['exact_fp32']:.1%} (fp32) vs {s['exact_int8']:.1%} (int8)"
        )


if __name__ == "__main__":
    main()
