"""The scoring service on the session's demo run: the HTTP contract (FastAPI TestClient), the
micro-batcher, a schemathesis fuzz of the OpenAPI schema (no 5xx), and a real uvicorn process
that scores and drains an in-flight request on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode

from pipeline import Scorer
from pipeline.serve.app import create_app
from pipeline.serve.batcher import MicroBatcher, Overloaded
from pipeline.serve.schemas import MAX_BODY_BYTES, MAX_TEXT_CHARS, MAX_TEXTS

pytestmark = pytest.mark.slow

GOOD, BAD = "这部电影太好看了，强烈推荐", "剧情拖沓，浪费时间，烂片"


@pytest.fixture(scope="module")
def client(demo_run):
    app = create_app("demo", demo_run.runs_dir, threads=1, load_in_background=False)
    with TestClient(app) as client:
        yield client


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] and body["message"]
    return body


# --------------------------------------------------------------------------------- contract


def test_health_readiness_and_models(client, demo_run):
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    default = Scorer.load("demo", runs_dir=demo_run.runs_dir).model_name
    assert ready["status"] == "ready" and ready["loaded"] == [default]
    models = client.get("/v1/models").json()
    assert models["default"] == default and models["run"] == "demo"
    assert [m["name"] for m in models["models"] if m["default"]] == [default]
    assert "/v1/score" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200


def test_score_matches_the_scorer_record_for_record(client, demo_run):
    texts = [GOOD, "", BAD, "<a href='x'></a>", "great movie"]
    body = client.post("/v1/score", json={"texts": texts}).json()
    expected = Scorer.load("demo", runs_dir=demo_run.runs_dir).score(texts, explain=False)
    assert [r["row"] for r in body["records"]] == list(range(len(texts)))
    assert [r["text"] for r in body["records"]] == texts
    for got, want in zip(body["records"], expected, strict=True):
        assert got["pred_star"] == want.pred_star and got["error"] == want.error
        assert got["warnings"] == want.warnings
        if want.probs is not None:
            assert got["probs"] == pytest.approx(want.probs, abs=1e-5)
    assert body["records"][1]["error"] == "empty review" and body["records"][1]["pred_star"] is None
    assert body["records"][0]["words"] is None and body["records"][0]["top_words"] == []


def test_explain_adds_word_attributions(client):
    (record,) = client.post("/v1/score", json={"texts": [GOOD], "explain": True}).json()["records"]
    words = record["words"]
    assert sum(w["weight"] for w in words) == pytest.approx(1.0, abs=1e-3)
    assert all(record["clean_text"][w["start"] : w["end"]] == w["word"] for w in words)
    assert record["attention_model"] and record["top_words"]


def test_other_models_load_on_request_and_unknown_ones_are_404(client):
    body = client.post("/v1/score", json={"texts": [GOOD], "model": "tfidf_lr"}).json()
    assert body["model"] == "tfidf_lr" and body["records"][0]["model"] == "tfidf_lr"
    assert "tfidf_lr" in client.get("/readyz").json()["loaded"]
    error = _error(client.post("/v1/score", json={"texts": [GOOD], "model": "nope"}), 404)
    assert "nope" in error["message"] and "tfidf_lr" in error["message"]


def test_aspects_come_with_each_record_when_asked(client):
    texts = ["剧情狗血老套，但是演技精湛自然", "好", ""]
    plain = client.post("/v1/score", json={"texts": texts}).json()
    assert all(r.get("aspects") is None for r in plain["records"])
    answer = client.post("/v1/score", json={"texts": texts, "aspects": True}).json()
    plot, acting = answer["records"][0]["aspects"]
    assert set(plot["aspects"]) == {"plot"} and set(acting["aspects"]) == {"acting"}
    assert "演技" in acting["aspects"]["acting"]  # with the run's own words (精湛, on the demo)
    assert plot["sentiment"] < 0 < acting["sentiment"]
    assert answer["records"][1]["aspects"] == []  # no aspect named
    assert answer["records"][2]["error"] and answer["records"][2]["aspects"] is None


def test_adapt_prior_reweights_probabilities(client):
    texts = [GOOD, BAD, GOOD]
    plain = client.post("/v1/score", json={"texts": texts}).json()
    fives = client.post("/v1/score", json={"texts": texts, "adapt_prior": [0, 0, 0, 0, 1]}).json()
    assert fives["prior"] == pytest.approx([0, 0, 0, 0, 1])
    for before, after in zip(plain["records"], fives["records"], strict=True):
        assert after["pred_star"] == 5 and after["expected_star"] > before["expected_star"]
    em = client.post("/v1/score", json={"texts": texts * 8, "adapt_prior": "em"}).json()
    assert sum(em["prior"]) == pytest.approx(1.0)
    assert all(sum(r["probs"]) == pytest.approx(1.0, abs=1e-6) for r in em["records"])
    huge = client.post("/v1/score", json={"texts": texts, "adapt_prior": [1e308] * 5}).json()
    assert huge["prior"] == pytest.approx([0.2] * 5)  # shares of any scale, no overflow to 0


def test_adapt_prior_refuses_what_it_cannot_do_well(client):
    few = _error(client.post("/v1/score", json={"texts": [GOOD, BAD], "adapt_prior": "em"}), 422)
    assert "at least 20" in few["message"]
    regression = {"texts": [GOOD] * 30, "adapt_prior": "em", "model": "head_reg"}
    body = _error(client.post("/v1/score", json=regression), 422)
    assert "not probabilities" in body["message"]
    four = {"texts": [GOOD], "adapt_prior": [1, 1, 1, 1]}
    four = _error(client.post("/v1/score", json=four), 422)
    assert "5 finite non-negative shares" in four["message"] and "'em'" not in four["message"]


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        ({"texts": []}, "texts"),
        ({"texts": [GOOD] * (MAX_TEXTS + 1)}, "texts"),
        ({"texts": ["好" * (MAX_TEXT_CHARS + 1)]}, "texts"),
        ({"texts": [1, 2]}, "texts"),
        ({"texts": GOOD}, "texts"),
        ({"texts": [GOOD], "explain": "yes"}, "explain"),
        ({"texts": [GOOD], "model": 3}, "model"),
        ({"texts": [GOOD], "adapt_prior": [1, 2]}, "adapt_prior"),
        ({"texts": [GOOD], "adapt_prior": [0, 0, 0, 0, 0]}, "adapt_prior"),
        ({"texts": [GOOD], "colour": "red"}, "colour"),
        ({}, "texts"),
    ],
)
def test_bad_requests_are_422_with_a_message(client, payload, where):
    body = _error(client.post("/v1/score", json=payload), 422)
    assert where in body["message"]


def test_malformed_bodies_are_4xx_never_500(client):
    post = lambda content: client.post(  # noqa: E731
        "/v1/score", content=content, headers={"content-type": "application/json"}
    )
    assert "UTF-8" in _error(post(b'{"texts": ["\xff\xfe bad"]}'), 400)["message"]
    assert "UTF-8" in _error(post(b'{"texts": ["\\udc80 half"]}'), 422)["message"]
    _error(post(b'{"texts": ["ok", NaN], "adapt_prior": [NaN, 1, 1, 1, 1]}'), 422)
    _error(post(b'{"texts": '), 422)
    assert "deeply" in _error(post(b"[" * 100_000), 400)["message"]
    _error(client.post("/v1/score", content=b"x" * (MAX_BODY_BYTES + 1)), 413)
    _error(client.get("/v1/nothing"), 404)
    _error(client.get("/v1/score"), 405)


def test_overload_answers_503_with_retry_after(demo_run):
    app = create_app(
        "demo", demo_run.runs_dir, threads=1, max_queued_texts=2, load_in_background=False
    )
    with TestClient(app) as client:
        response = client.post("/v1/score", json={"texts": [GOOD] * 3})
        assert _error(response, 503)["error"] == "overloaded"
        assert response.headers["retry-after"] == "1"
        assert client.post("/v1/score", json={"texts": [GOOD, BAD]}).status_code == 200


# --------------------------------------------------------------------------------- batcher


def test_concurrent_requests_share_one_batch_in_order():
    calls: list[list[str]] = []

    def run_batch(key: Any, texts: list[str]) -> list[str]:
        calls.append(texts)
        return [f"{key}:{t}" for t in texts]

    async def main() -> list[list[str]]:
        batcher = MicroBatcher(run_batch, max_wait_s=0.05, max_queued_texts=100)
        batcher.start()
        jobs = [batcher.submit("m", [f"{i}a", f"{i}b"]) for i in range(8)]
        results = await asyncio.gather(*jobs)
        with pytest.raises(Overloaded):
            await batcher.submit("m", ["x"] * 101)
        await batcher.close()
        with pytest.raises(Overloaded):  # closed: refuses new work
            await batcher.submit("m", ["x"])
        return results

    results = asyncio.run(main())
    assert results == [[f"m:{i}a", f"m:{i}b"] for i in range(8)]
    assert len(calls) == 1 and len(calls[0]) == 16


def test_batches_respect_the_token_budget_and_keys():
    calls: list[tuple[Any, int]] = []

    def run_batch(key: Any, texts: list[str]) -> list[int]:
        calls.append((key, len(texts)))
        return [len(t) for t in texts]

    async def main() -> list[list[int]]:
        batcher = MicroBatcher(run_batch, token_budget=100)
        batcher.start()
        jobs = [batcher.submit(i % 2, ["好" * 40]) for i in range(6)]
        results = await asyncio.gather(*jobs)
        await batcher.close()
        return results

    assert asyncio.run(main()) == [[40]] * 6
    assert all(n * 42 <= 100 for _, n in calls) and sum(n for _, n in calls) == 6
    assert {k for k, _ in calls} == {0, 1}


def test_a_failing_batch_fails_its_requests_not_the_service():
    def run_batch(key: Any, texts: list[str]) -> list[str]:
        if key == "bad":
            raise RuntimeError("boom")
        return texts

    async def main() -> None:
        batcher = MicroBatcher(run_batch)
        batcher.start()
        with pytest.raises(RuntimeError, match="boom"):
            await batcher.submit("bad", ["x"])
        assert await batcher.submit("good", ["y"]) == ["y"]
        await batcher.close()

    asyncio.run(main())


# --------------------------------------------------------------------------------- fuzzing


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_fuzzed_requests_never_get_a_server_error(demo_run, mode):
    """schemathesis generates requests from the OpenAPI schema (valid ones, then invalid ones)
    for every operation; none may get a 5xx."""
    app = create_app("demo", demo_run.runs_dir, threads=1, load_in_background=False)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /v1/score", "GET /v1/models"}
    for operation in operations:
        if mode is GenerationMode.NEGATIVE and not operation.label.startswith("POST"):
            continue  # nothing to make invalid in a GET without parameters

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=20,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: Any) -> None:
            response = case.call()
            assert response.status_code < 500, (case.body, response.text)
            assert response.headers["content-type"][0].startswith("application/json")

        check()


# --------------------------------------------------------------------------------- uvicorn


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _post(url: str, payload: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        url, json.dumps(payload).encode(), {"content-type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())


def test_douban_serve_scores_and_drains_on_sigterm(demo_run):
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "pipeline.cli", "serve", "--run", "demo"]
    command += ["--runs-dir", str(demo_run.runs_dir), "--port", str(port)]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, server.stderr.read()
            try:
                if _get(f"{base}/readyz")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the service did not become ready"
            time.sleep(0.2)
        assert _get(f"{base}/healthz") == (200, {"status": "ok"})
        (record,) = _post(f"{base}/v1/score", {"texts": [GOOD]})["records"]
        assert record["pred_star"] in range(1, 6) and record["error"] is None

        answers: list[dict[str, Any]] = []
        texts = [GOOD * 3, BAD * 3] * 32
        slow = threading.Thread(
            target=lambda: answers.append(_post(f"{base}/v1/score", {"texts": texts}))
        )
        slow.start()
        while _get(f"{base}/readyz")[1]["in_flight"] == 0:
            assert slow.is_alive(), "the request finished before it was seen in flight"
            time.sleep(0.005)
        server.send_signal(signal.SIGTERM)
        slow.join(timeout=120)
        assert len(answers) == 1 and len(answers[0]["records"]) == len(texts)
        assert server.wait(timeout=60) in (0, -signal.SIGTERM)  # uvicorn re-raises it
    finally:
        if server.poll() is None:
            os.kill(server.pid, signal.SIGKILL)
            server.wait()


def test_the_cli_and_the_serve_package_import_no_torch():
    code = (
        "import sys, pipeline.cli, pipeline.serve; "
        "print(sorted(m for m in ('torch', 'transformers', 'fastapi') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_service_follows_retrains_and_keeps_answering(demo_run, tmp_path):
    import shutil

    from pipeline.workflow import train_run

    runs = tmp_path / "runs"
    shutil.copytree(demo_run.paths.root, runs / "demo")
    settings = demo_run.model_copy(update={"runs_dir": runs})
    first = (runs / "demo" / "trained" / "CURRENT").read_text().strip()
    app = create_app("demo", runs, threads=1, load_in_background=False)
    with TestClient(app) as client:
        payload = {"texts": [GOOD, BAD], "explain": True}
        assert client.post("/v1/score", json=payload).status_code == 200
        for _ in range(3):  # the set the service started on is deleted by the third
            train_run(settings, ["tfidf_lr"], force=True, progress=False)
        assert not (runs / "demo" / "trained" / first).exists()
        response = client.post("/v1/score", json=payload)
        assert response.status_code == 200, response.text
        assert all(r["pred_star"] in range(1, 6) for r in response.json()["records"])


def test_the_largest_valid_request_fits_the_body_limit(client):
    """256 texts of 5,000 emoji, escaped the way json.dumps escapes them (12 bytes each)."""
    body = json.dumps({"texts": ["😀" * MAX_TEXT_CHARS] * MAX_TEXTS}).encode("ascii")
    assert len(body) > 15_000_000
    response = client.post(
        "/v1/score", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text[:300]
    assert len(response.json()["records"]) == MAX_TEXTS


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_api_docs_need_no_internet(client, page):
    html = client.get(page)
    assert html.status_code == 200
    assets = re.findall(r'(?:src|href)="([^"]+)"', html.text)
    assert assets and not [a for a in assets if a.startswith(("http:", "https:", "//"))], assets
    assert "fonts.googleapis" not in html.text and "cdn.jsdelivr" not in html.text
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
