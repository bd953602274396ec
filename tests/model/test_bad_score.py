"""`douban score` against bad input, broken runs and hostile text: never a traceback; a clear
one-line error that names the problem (and exits non-zero), or exactly one record per input."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.config import RunPaths
from pipeline.errors import CorruptArtifactError

pytestmark = pytest.mark.slow

HOSTILE = "[/red][link=http://x]好看[/link]\x1b]0;pwned\x07\x1b[2J\x9b31m\u202e结尾"


@dataclass
class Case:
    """``make(tmp_path, run)`` returns the arguments after ``douban score`` and the stdin
    bytes; ``run`` is a private copy of the demo run that the case may break."""

    id: str
    make: Callable[[Path, RunPaths], tuple[list[str], bytes | None]]
    code: int
    says: tuple[str, ...] = ()  # in the one error line (code != 0) or on stdout (code == 0)
    records: int | None = None  # JSON records expected on stdout (code == 0)


def _write(path: Path, data: bytes | str) -> Path:
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def _model_file(run: RunPaths, name: str, file: str) -> Path:
    return run.model(name) / file


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _misshape(path: Path) -> None:
    tensors = load_file(str(path))
    key = sorted(tensors)[0]
    tensors[key] = np.zeros(3, dtype=tensors[key].dtype)
    save_file(tensors, str(path))


def _set_kind(path: Path) -> None:
    config = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps({**config, "kind": "crystal_ball"}), encoding="utf-8")


def _broken(change: Callable[[Path], None], file: str) -> Callable[..., tuple[list[str], None]]:
    """A case that damages ``file`` of head_cls (a member of the default ensemble)."""

    def make(tmp: Path, run: RunPaths) -> tuple[list[str], None]:
        change(_model_file(run, "head_cls", file))
        return ["好看"], None

    return make


CASES = [
    # ------------------------------------------------------------------ input files
    Case("missing input file", lambda t, r: (["-i", str(t / "gone.csv")], None), 2,
         ("gone.csv", "does not exist")),
    Case("input checked before the run is opened",
         lambda t, r: (["-i", str(t / "gone.txt"), "--run", "nope"], None), 2, ("gone.txt",)),
    Case("directory as input", lambda t, r: (["-i", str(t)], None), 2, ("is a directory",)),
    Case("csv without a review column",
         lambda t, r: (["-i", str(_write(t / "x.csv", "id,stars\n1,5\n"))], None), 2,
         ("x.csv", "no review column", "comment")),
    Case("output with an unknown suffix",
         lambda t, r: (["好看", "-o", str(t / "out.xlsx")], None), 2, ("out.xlsx", ".jsonl")),
    Case("--json into a .csv file",
         lambda t, r: (["好看", "--json", "-o", str(t / "out.csv")], None), 2, ("JSON Lines",)),
    # ------------------------------------------------------------------ runs and models
    Case("unknown model", lambda t, r: (["--model", "nope", "好看"], None), 1,
         ("'nope'", "head_cls", "--model")),
    Case("missing run", lambda t, r: (["--run", "nope", "好看"], None), 1,
         ("'nope'", "does not exist", "demo")),
    Case("missing runs folder", lambda t, r: (["--runs-dir", str(t / "nowhere"), "好看"], None),
         1, ("does not exist",)),
    Case("run name that climbs out", lambda t, r: (["--run", "../demo", "好看"], None), 2,
         ("run name",)),
    Case("absolute run name", lambda t, r: (["--run", str(r.root), "好看"], None), 2,
         ("absolute path",)),
    Case("truncated model weights", _broken(_truncate, "model.safetensors"), 1,
         ("head_cls/model.safetensors", "douban train --run demo")),
    Case("garbage model weights",
         _broken(lambda p: p.write_bytes(b"not a safetensors file"), "model.safetensors"), 1,
         ("head_cls/model.safetensors", "douban train --run demo")),
    Case("missing model weights", _broken(Path.unlink, "model.safetensors"), 1,
         ("head_cls/model.safetensors", "douban train --run demo")),
    Case("wrong tensor shapes", _broken(_misshape, "model.safetensors"), 1,
         ("head_cls", "does not match", "douban train --run demo")),
    Case("invalid model config", _broken(lambda p: p.write_text("{oops"), "config.json"), 1,
         ("head_cls/config.json", "douban train --run demo")),
    Case("missing model config", _broken(Path.unlink, "config.json"), 1,
         ("head_cls", "douban train --run demo")),
    Case("unknown model kind", _broken(_set_kind, "config.json"), 1,
         ("unknown kind", "douban train --run demo")),
    # ------------------------------------------------------------------ hostile and odd text
    Case("rich markup and escapes in a review", lambda t, r: (["--json", HOSTILE], None), 0,
         (), 1),
    Case("escapes on stdin", lambda t, r: (["--json", "-i", "-"], HOSTILE.encode() + b"\n"), 0,
         (), 1),
    Case("invalid UTF-8 on stdin",
         lambda t, r: (["--json", "-i", "-"], b"\xe5\xa5\xbd\n\xff bad\n"), 0,
         ("invalid UTF-8",), 2),
    Case("empty stdin", lambda t, r: (["--json", "-i", "-"], b""), 0, (), 0),
    Case("binary garbage as text",
         lambda t, r: (["--json", "-i", str(_write(t / "g.txt", bytes(range(256)) * 8))], None),
         0, (), None),
    Case("NUL inside a CSV field",
         lambda t, r: (["--json", "-i", str(_write(t / "n.csv", "comment\n好\x00看\n"))], None),
         0, (), 1),
    Case("a 200,000-character review",
         lambda t, r: (["--json", "-i", str(_write(t / "l.csv", "comment\n" + "好看" * 100_000))],
                       None), 0, ("characters",), 1),
    Case("UTF-16 CSV with a BOM",
         lambda t, r: (["--json", "-i", str(_write(t / "u.csv", "\ufeffcomment\n好看\n难看\n"
                                                   .encode("utf-16-le")))], None),
         0, ("好看", "难看"), 2),
    Case("CSV row shorter than its header",
         lambda t, r: (["--json", "-i", str(_write(t / "s.csv", "id,comment\n1,好看\n2\n"))], None),
         0, ("empty review",), 2),
    Case("unterminated quote", lambda t, r: (["--json", "-i", str(_write(t / "q.csv",
                                              'comment\n"好看\n难看\n'))], None), 0, (), 1),
]  # fmt: skip


@pytest.fixture
def run_copy(demo_run, tmp_path) -> RunPaths:
    """The demo run copied (without its feature store, which scoring does not read)."""
    target = tmp_path / "runs" / demo_run.run_name
    shutil.copytree(demo_run.paths.root, target, ignore=shutil.ignore_patterns("features"))
    return RunPaths(target)


def test_corpus_is_large_enough():
    assert len(CASES) >= 15 and len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_score_input(case: Case, run_copy: RunPaths, tmp_path: Path) -> None:
    args, stdin = case.make(tmp_path, run_copy)
    base = ["score", "--run", run_copy.name, "--runs-dir", str(run_copy.root.parent)]
    result = CliRunner().invoke(app, [*base, *args], input=stdin)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert result.exit_code == case.code, result.output
    if case.code:
        assert result.stdout == ""
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, result.stderr
        for needle in case.says:
            assert needle in errors[0], errors[0]
        return
    lines = result.stdout.splitlines()
    records = [json.loads(line) for line in lines]
    if case.records is not None:
        assert len(records) == case.records, result.stdout
    assert [r["row"] for r in records] == list(range(len(records)))
    assert not any(ch in result.stdout for ch in "\x00\x07\x1b\x9b\u202e")  # all escaped
    for needle in case.says:
        assert needle in result.stdout
    assert f"scored {len(records):,} reviews" in result.stderr


def test_hostile_text_survives_json_intact(run_copy: RunPaths) -> None:
    """Escaping is for the terminal only: the JSON record decodes back to the exact text."""
    base = ["score", "--run", run_copy.name, "--runs-dir", str(run_copy.root.parent)]
    result = CliRunner().invoke(app, [*base, "--json", HOSTILE])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["text"] == HOSTILE


def test_missing_input_does_not_load_models(run_copy: RunPaths, tmp_path: Path) -> None:
    """With every model file gone, a missing input is still what the user hears about."""
    shutil.rmtree(run_copy.models)
    base = ["score", "--run", run_copy.name, "--runs-dir", str(run_copy.root.parent)]
    result = CliRunner().invoke(app, [*base, "-i", str(tmp_path / "gone.csv")])
    assert result.exit_code == 2 and "gone.csv" in result.stderr, result.output


def test_a_flipped_bit_in_the_weights_is_refused(run_copy: RunPaths) -> None:
    from pipeline import Scorer

    text = "剧情拖沓，浪费时间"
    before = Scorer.load(run_copy.root, model="tfidf_lr").score_records([text])[0]
    weights = run_copy.model("tfidf_lr") / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-7] ^= 0x10  # one bit of a float in the tensor data, not the header
    weights.write_bytes(bytes(data))
    with pytest.raises(CorruptArtifactError, match="checksum") as err:
        Scorer.load(run_copy.root, model="tfidf_lr").score_records([text])
    assert "douban train --run demo --force" in str(err.value)
    base = ["score", "--run", run_copy.name, "--runs-dir", str(run_copy.root.parent)]
    result = CliRunner().invoke(app, [*base, "--model", "tfidf_lr", text])
    assert result.exit_code == 1 and "checksum" in result.output
    assert "Traceback" not in result.output and before["pred_star"] in range(1, 6)
