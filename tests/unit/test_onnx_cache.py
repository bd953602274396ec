"""The ONNX graph cache keeps the most recently used graphs only (each fine-tune exports one)."""

from __future__ import annotations

import os
from pathlib import Path

from pipeline.encoding.onnx_encoder import _keep_recent


def test_the_least_recently_used_graphs_are_evicted(tmp_path: Path) -> None:
    graphs = []
    for i in range(5):
        graph = tmp_path / f"g{i}.onnx"
        graph.write_bytes(b"x")
        os.utime(graph, (1_000 + i, 1_000 + i))  # g0 oldest .. g4 newest
        graphs.append(graph)
    (tmp_path / ".g9.onnx.123.tmp").write_bytes(b"x")  # another process's export in flight
    _keep_recent(graphs[0], keep=3)  # g0 was just used again
    assert sorted(p.name for p in tmp_path.glob("*.onnx")) == ["g0.onnx", "g3.onnx", "g4.onnx"]
    assert (tmp_path / ".g9.onnx.123.tmp").exists()
