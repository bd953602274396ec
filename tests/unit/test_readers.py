"""`Run` and the artifacts readers are the only code that opens a run's files.

import-linter cannot say "no module but these two calls ``pd.read_parquet``", so this reads the
code: outside ``pipeline/run.py`` and ``pipeline/artifacts.py`` no module calls a file-reading
primitive except the few that read a user's own files (the CSV they prepare or score, their
config, their jieba dictionary) or the encoder cache, each named here with why; and the surfaces
(reports, analytics, the service, the CLI, the app) do not even reach for the artifacts readers:
they read a run through :class:`pipeline.run.Run`.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
READERS = {"pipeline/run.py", "pipeline/artifacts.py"}
NOT_RUN_FILES = {  # module -> what it opens, which is no run's file
    "app/views/reports.py": "a page the reports stage wrote into reports/<run>/",
    "app/views/score.py": "the CSV a user uploads to score",
    "pipeline/cli/base.py": "the user's douban.toml",
    "pipeline/config.py": "the user's douban.toml",
    "pipeline/data/demo.py": "the demo CSV it writes",
    "pipeline/data/encodings.py": "the head of the user's CSV, to tell its encoding",
    "pipeline/data/rows.py": "the user's CSV",
    "pipeline/data/text.py": "stopword lists and the user's jieba dictionary",
    "pipeline/encoding/load.py": "encoder weights in the model cache",
    "pipeline/encoding/onnx_encoder.py": "the exported encoder in the model cache",
    "pipeline/modeling/spec.py": "the user's jieba dictionary prepare recorded",
    "pipeline/predict/files.py": "the file a user scores",
    "pipeline/predict/ray_scoring.py": "the file a user scores, on Ray",
}
SURFACES = ("pipeline/reports/", "pipeline/analytics/", "pipeline/serve/", "pipeline/cli/", "app/")
LIBRARY_READERS = {
    ("pd", "read_parquet"), ("pd", "read_csv"), ("pq", "read_table"), ("pq", "ParquetFile"),
    ("pq", "read_schema"), ("pq", "read_metadata"), ("np", "load"), ("json", "load"),
    ("ds", "dataset"), ("onnx", "load"), ("tomllib", "load"), ("torch", "load"),
}  # fmt: skip
NAMED_READERS = {"open", "load_file", "safe_open"}
PATH_READERS = {"read_text", "read_bytes", "open"}
NOT_PATHS = {"Run", "FeatureStore", "os", "Image", "webbrowser", "Scorer"}  # .open() of these
ARTIFACT_READERS = {
    "read_json", "read_manifest", "is_current", "read_frame", "read_table", "parquet_file",
    "read_array", "read_arrays", "read_tensors", "read_parts", "cached_json",
    "cached_arrays",
}  # fmt: skip


def _modules() -> list[tuple[str, ast.Module]]:
    files = [*ROOT.joinpath("pipeline").rglob("*.py"), *ROOT.joinpath("app").rglob("*.py")]
    return [(p.relative_to(ROOT).as_posix(), ast.parse(p.read_text("utf-8"))) for p in files]


def _opens(tree: ast.Module) -> list[str]:
    """The calls in ``tree`` that open a file themselves."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id in NAMED_READERS:
            found.append(f"{f.id}() line {node.lineno}")
        elif isinstance(f, ast.Attribute):
            owner = f.value.id if isinstance(f.value, ast.Name) else None
            if (owner, f.attr) in LIBRARY_READERS or (
                f.attr in PATH_READERS and owner not in NOT_PATHS
            ):
                found.append(f"{ast.unparse(f)}() line {node.lineno}")
    return found


def test_only_run_and_artifacts_open_run_files() -> None:
    modules = _modules()
    assert len(modules) > 50  # the scan reads the package, not an empty folder
    offenders = {
        name: calls
        for name, tree in modules
        if name not in READERS | NOT_RUN_FILES.keys() and (calls := _opens(tree))
    }
    assert offenders == {}, "read run files through pipeline.artifacts or Run, not directly"
    # the exemptions stay true: each still reads its own kind of file, or leaves the list
    stale = [name for name, tree in modules if name in NOT_RUN_FILES and not _opens(tree)]
    assert stale == []


def test_surfaces_read_a_run_through_run() -> None:
    reaching = {}
    for name, tree in _modules():
        if not name.startswith(SURFACES):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "pipeline.artifacts":
                taken = {a.name for a in node.names} & ARTIFACT_READERS
                if taken:
                    reaching[name] = sorted(taken)
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "artifacts"
                and node.attr in ARTIFACT_READERS
            ):
                reaching[name] = [node.attr]
    assert reaching == {}, "surfaces read a run through pipeline.run.Run"


def test_the_scan_sees_a_direct_read() -> None:
    """The check itself: a module that reads parquet or JSON by hand is caught."""
    code = "df = pd.read_parquet(p)\ndoc = json.load(path.open())\n"
    calls = _opens(ast.parse(code))
    assert any("pd.read_parquet" in c for c in calls)
    assert any("json.load" in c for c in calls) and any("path.open" in c for c in calls)


def test_kept_parts_come_back_as_written_and_user_words_stay_data(tmp_path: Path) -> None:
    """Frames, bytes and JSON round-trip through write_parts / read_parts; a dict whose key is
    the frame marker (an aspect a user names "$frame") stays a dict, and a part that names a
    file outside the folder is never read."""
    import pandas as pd

    from pipeline.artifacts import read_parts, write_json, write_parts

    parts = {
        "table": pd.DataFrame({"word": ["剧情", "演技"], "count": [3, 2]}),
        "clouds": {"film": b"\x89PNG", "1★": b"png"},
        "told": {"$frame": {"praise": [{"clause": "剧情好"}]}},
        "maps": [pd.DataFrame({"x": [0.5]}), None],
        "ci": (0.1, 0.2),
    }
    write_parts(tmp_path, parts)
    back = read_parts(tmp_path)
    pd.testing.assert_frame_equal(back["table"], parts["table"])
    assert back["clouds"] == parts["clouds"] and back["told"] == parts["told"]
    assert back["maps"][0]["x"].tolist() == [0.5] and back["maps"][1] is None
    assert back["ci"] == [0.1, 0.2]  # tuples come back as lists: the caller converts
    assert {p.name for p in tmp_path.iterdir()} <= {"parts.json", "p0.parquet", "p1-0.bin",
                                                    "p1-1.bin", "p3-0.parquet"}  # fmt: skip
    write_json(tmp_path / "parts.json", {"stolen": {"$frame": "../../secret.parquet"}})
    assert read_parts(tmp_path) == {"stolen": {"$frame": "../../secret.parquet"}}
