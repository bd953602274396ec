"""Prior shift, quantification and the named held-out evaluations (issue 12)."""

from __future__ import annotations

import html
import re

import numpy as np
import pandas as pd
import pytest

from pipeline.data.sources import stratified_keep
from pipeline.errors import InputError
from pipeline.modeling.calibration import Calibration, fit_calibration
from pipeline.modeling.inputs import Predictions
from pipeline.modeling.metrics import bootstrap_ci, quadratic_weighted_kappa
from pipeline.modeling.prior import (
    adapt_predictions,
    confusion_rates,
    corrected_mix,
    em_prior,
    implied_prior,
    one_hot,
    prior_of,
    reweight,
)
from pipeline.modeling.quantify import METHODS, emd, film_estimates, mean_star, summarise
from pipeline.training.data import TrainingData
from pipeline.training.evaluations import make_folds, run_evaluation
from pipeline.training.fold_fitters import FITTERS, Fold, fit_order

TRAIN_PRIOR = np.array([0.4, 0.15, 0.15, 0.15, 0.15])


def _shifted_sample(prior: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Reviews drawn with star mix ``prior`` and the exact posteriors of a classifier calibrated
    under TRAIN_PRIOR: a 1-D score per review, Gaussian around its star (p(x|y) fixed, so only
    the prior moves)."""
    rng = np.random.default_rng(seed)
    stars = rng.choice(5, size=n, p=prior) + 1
    x = stars + rng.normal(0.0, 0.8, size=n)
    likelihood = np.exp(-0.5 * ((x[:, None] - np.arange(1, 6)) / 0.8) ** 2)
    post = likelihood * TRAIN_PRIOR
    return stars, post / post.sum(axis=1, keepdims=True)


def test_em_recovers_a_shifted_prior() -> None:
    target = np.array([0.05, 0.05, 0.2, 0.4, 0.3])
    stars, probs = _shifted_sample(target, 20_000, seed=1)
    adapted, prior = em_prior(probs, TRAIN_PRIOR)
    raw = probs.mean(axis=0)
    assert np.abs(prior - prior_of(stars)).sum() < 0.5 * np.abs(raw - prior_of(stars)).sum()
    assert np.allclose(adapted.sum(axis=1), 1.0)
    assert ((adapted.argmax(1) + 1) == stars).mean() > ((probs.argmax(1) + 1) == stars).mean()


def test_em_steps_many_review_sets_at_once_as_it_would_each_alone(monkeypatch) -> None:
    import pipeline.modeling.quantify as quantify
    from pipeline.modeling.metrics import resampled_interval
    from pipeline.modeling.prior import em_priors

    sets = np.stack([_shifted_sample(TRAIN_PRIOR[::-1], 60, seed=s)[1] for s in range(6)])
    sets[2] = sets[2][0]  # one set of identical reviews: it takes far more steps than the rest
    together = em_priors(sets, TRAIN_PRIOR)
    alone = np.stack([em_prior(p, TRAIN_PRIOR)[1] for p in sets])
    assert np.allclose(together, alone, rtol=0, atol=1e-12)
    assert len({tuple(np.round(m, 3)) for m in together}) == 6  # each its own mix
    probs = sets[0]
    val_stars, val_probs = _shifted_sample(TRAIN_PRIOR, 300, seed=9)
    context = {"train_prior": TRAIN_PRIOR, "val_stars": val_stars, "val_probs": val_probs}
    reference = quantify.Reference.of(**context)
    monkeypatch.setattr(quantify, "EM_BATCH_ROWS", 7 * len(probs))  # 8 batches of resamples
    for method in quantify.METHODS:  # the same resamples and interval as any statistic's
        one_by_one = resampled_interval(
            lambda rows, m=method: mean_star(quantify.estimate(m, probs[rows], **context)),
            len(probs), 50, 3,
        )  # fmt: skip
        batched = quantify.bootstrap_estimate(method, probs, reference, reps=50, seed=3)
        assert batched == pytest.approx(one_by_one, abs=1e-12), method
        assert one_by_one[0] < one_by_one[1], method


def test_a_balanced_model_starts_em_from_the_uniform_mix() -> None:
    target = np.array([0.05, 0.05, 0.2, 0.4, 0.3])
    rng = np.random.default_rng(3)
    stars = rng.choice(5, size=20_000, p=target) + 1
    x = stars + rng.normal(0.0, 0.8, size=len(stars))
    probs = np.exp(-0.5 * ((x[:, None] - np.arange(1, 6)) / 0.8) ** 2)  # balanced: no prior
    probs /= probs.sum(axis=1, keepdims=True)
    start = implied_prior({"kind": "tfidf_lr", "balanced": True}, TRAIN_PRIOR)
    assert np.allclose(start, 0.2)
    error = {name: np.abs(em_prior(probs, p)[1] - prior_of(stars)).sum()
             for name, p in (("implied", start), ("training mix", TRAIN_PRIOR))}  # fmt: skip
    assert error["implied"] < 0.05 < error["training mix"]


def test_an_ensemble_assumes_its_members_mixes_by_weight() -> None:
    configs = {"a": {"kind": "head"}, "b": {"kind": "tfidf_lr", "balanced": True}}
    ensemble = {"kind": "ensemble", "members": ["a", "b"], "member_weights": [0.25, 0.75]}
    mixed = implied_prior(ensemble, TRAIN_PRIOR, configs.__getitem__)
    assert np.allclose(mixed, 0.25 * TRAIN_PRIOR + 0.75 * 0.2)
    assert np.allclose(implied_prior({"kind": "head"}, TRAIN_PRIOR), TRAIN_PRIOR)


def test_em_keeps_the_prior_when_nothing_shifted() -> None:
    stars, probs = _shifted_sample(TRAIN_PRIOR, 20_000, seed=2)
    _, prior = em_prior(probs, TRAIN_PRIOR)
    assert np.abs(prior - TRAIN_PRIOR).max() < 0.03


def test_reweight_to_the_same_prior_is_identity() -> None:
    _, probs = _shifted_sample(TRAIN_PRIOR, 100, seed=3)
    assert np.allclose(reweight(probs, TRAIN_PRIOR, TRAIN_PRIOR), probs)


def test_the_adjusted_mix_inverts_the_confusion_rates() -> None:
    val_stars, val_probs = _shifted_sample(TRAIN_PRIOR, 20_000, seed=4)
    target = np.array([0.05, 0.05, 0.2, 0.4, 0.3])
    stars, probs = _shifted_sample(target, 20_000, seed=5)
    for scores, val_scores in ((probs, val_probs), (one_hot(probs.argmax(1) + 1), None)):
        val_scores = one_hot(val_probs.argmax(1) + 1) if val_scores is None else val_scores
        est = corrected_mix(scores.mean(0), confusion_rates(val_stars, val_scores))
        assert est.sum() == pytest.approx(1.0)
        assert np.abs(est - prior_of(stars)).sum() < np.abs(scores.mean(0) - prior_of(stars)).sum()


def test_adapt_predictions_leaves_regression_alone() -> None:
    pred = Predictions(np.array([3, 4], np.int8), np.array([3.2, 4.1], np.float32))
    assert adapt_predictions(pred, TRAIN_PRIOR) is pred


def test_film_estimates_beat_classify_and_count_on_shifted_films() -> None:
    val_stars, val_probs = _shifted_sample(TRAIN_PRIOR, 5_000, seed=6)
    mixes = {"好片": [0.02, 0.03, 0.15, 0.4, 0.4], "烂片": [0.6, 0.2, 0.1, 0.05, 0.05]}
    parts = [(film, *_shifted_sample(np.array(p), 400, seed=i)) for i, (film, p) in
             enumerate(mixes.items())]  # fmt: skip
    films = np.concatenate([[f] * len(s) for f, s, _ in parts])
    stars = np.concatenate([s for _, s, _ in parts])
    probs = np.concatenate([p for _, _, p in parts])
    train_stars = np.repeat(np.arange(1, 6), (TRAIN_PRIOR * 1000).astype(int))
    est = film_estimates(
        films, stars, probs, train_stars=train_stars, val_stars=val_stars, val_probs=val_probs
    )
    assert list(est["film"]) == ["好片", "烂片"] and list(est["n"]) == [400, 400]
    for row in est.itertuples():
        assert row.true_mean == pytest.approx(mean_star(row.true))
        assert row.em_abs_error < row.pcc_abs_error
        assert row.pacc_emd < row.pcc_emd
    assert est["em_abs_error"].sum() < est["cc_abs_error"].sum()
    summary = summarise(est, min_reviews=50)
    assert set(summary) == set(METHODS) and summary["em"]["films"] == 2


def test_film_estimates_reject_misaligned_input() -> None:
    with pytest.raises(ValueError, match="one entry per review"):
        film_estimates(["a"], np.array([1, 2]), np.ones((2, 5)) / 5, train_stars=np.array([1]),
                       val_stars=np.array([1]), val_probs=np.ones((1, 5)) / 5)  # fmt: skip


def test_emd_counts_star_steps() -> None:
    assert emd(np.eye(5)[0], np.eye(5)[4]) == pytest.approx(4.0)
    assert emd(np.eye(5)[2], np.eye(5)[2]) == 0.0


def test_bootstrap_interval_brackets_the_point_estimate() -> None:
    rng = np.random.default_rng(0)
    t = rng.integers(1, 6, 2_000)
    p = np.clip(t + rng.integers(-1, 2, 2_000), 1, 5)
    ci = bootstrap_ci(t, p)
    assert ci["accuracy"][0] < (t == p).mean() < ci["accuracy"][1]
    assert ci["qwk"][0] < quadratic_weighted_kappa(t, p) < ci["qwk"][1]
    small = bootstrap_ci(t[:100], p[:100])
    assert small["qwk"][1] - small["qwk"][0] > ci["qwk"][1] - ci["qwk"][0]


def test_film_folds_never_share_a_film(demo_run) -> None:
    reviews = TrainingData.load(demo_run.paths).reviews.assign(source="demo.csv")
    folds = make_folds(reviews, "film_holdout", folds=3)
    assert len(folds) == 3
    tested = np.concatenate([f.test for f in folds])
    assert sorted(tested) == list(range(len(reviews)))  # every review tested once
    films = reviews["film"].to_numpy()
    for f in folds:
        assert not set(films[f.test]) & set(films[f.train])
        assert not set(films[f.val]) & (set(films[f.train]) | set(films[f.test]))


def test_source_holdout_needs_two_corpora(demo_run) -> None:
    reviews = TrainingData.load(demo_run.paths).reviews.assign(source="demo.csv")
    with pytest.raises(InputError, match="at least two corpora"):
        make_folds(reviews, "source_holdout")


def test_source_holdout_on_a_real_run(demo_run) -> None:
    data = TrainingData.load(demo_run.paths)
    films = sorted(data.reviews["film"].unique())
    half = set(films[: len(films) // 2])
    data.reviews = data.reviews.assign(
        source=np.where(data.reviews["film"].isin(half), "a.csv", "b.csv")
    )
    section = run_evaluation(data, demo_run, "source_holdout", ["majority", "tfidf_lr"])
    assert [f["label"] for f in section["folds"]] == ["a.csv", "b.csv"]
    lr = section["models"]["tfidf_lr"]
    assert lr["test"]["n"] == len(data.reviews)
    lo, hi = lr["test"]["ci95"]["qwk"]
    assert lo <= lr["test"]["qwk"] <= hi
    assert set(lr["by_source"]) == {"a.csv", "b.csv"}
    assert section["adapted"]["tfidf_lr"]["test"]["n"] == len(data.reviews)
    est = section["films"]["tfidf_lr"]
    assert {e["film"] for e in est} == set(films)
    assert section["quantification"]["tfidf_lr"]["em"]["films"] >= 1


def test_fit_order_puts_needs_first() -> None:
    assert fit_order(["ensemble_finetune_tfidf"]) == [
        "head_cls", "finetune_cls", "tfidf_lr", "ensemble_finetune_tfidf",
    ]  # fmt: skip
    assert fit_order(["finetune_cls"], warm_start=False) == ["finetune_cls"]
    with pytest.raises(InputError, match="cannot evaluate"):
        fit_order(["finetune_reg"])


@pytest.mark.slow
def test_the_fine_tuned_model_is_refitted_per_fold(demo_run) -> None:
    data = TrainingData.load(demo_run.paths)
    with_states = data.reviews[data.token_mask()]  # what the frozen head it starts from reads
    films = with_states["film"].value_counts().index[:2]
    one, other = (with_states.index[with_states["film"] == f].to_numpy() for f in films)
    small = {"train_limit": 96, "val_limit": 48, "max_length": 32, "train_layers": 1,
             "eval_every": 1000, "device": "cpu"}  # fmt: skip
    settings = demo_run.model_copy(  # a frozen head of the last layer alone: warm-startable
        update={
            "finetune": demo_run.finetune.model_copy(update=small),
            "head": demo_run.head.model_copy(update={"layers": [-1], "epochs": 2}),
        }
    )
    fold = Fold(films[0], other[:-40], other[-40:], one)  # trained on another film
    fitted: dict = {}
    for name in fit_order(["ensemble_finetune_tfidf"]):
        fitted[name] = FITTERS[name](data, fold, settings, fitted)
    tuned = fitted["finetune_cls"]
    assert tuned.config["warm_start"] == "head_cls"  # from this fold's frozen head
    pred = tuned.predict(data.source, fold.test)
    assert len(pred.pred_star) == len(fold.test) and np.allclose(pred.probs.sum(1), 1, atol=1e-4)
    mixed = fitted["ensemble_finetune_tfidf"].predict(data.source, fold.test)
    assert mixed.probs.shape == (len(fold.test), 5)


def test_stratified_keep_caps_each_source_in_proportion() -> None:
    rng = np.random.default_rng(0)
    sources = np.array(["big.csv"] * 900 + ["small.csv"] * 50)
    films = np.where(rng.random(950) < 0.7, "甲", "乙")
    stars = rng.integers(1, 6, 950)
    keep = stratified_keep(sources, films, stars, per_source=100, seed=0)
    assert keep[900:].all()  # under the cap: kept whole
    big = keep[:900]
    assert big.sum() == 100
    share = (films[:900][big] == "甲").mean()
    assert abs(share - (films[:900] == "甲").mean()) < 0.03
    assert np.array_equal(keep, stratified_keep(sources, films, stars, 100, seed=0))


def _write_csv(path, rows: list[tuple[str, int, str]], source: list[str] | None = None) -> None:
    header = "Movie_Name_EN,Movie_Name_CN,Date,Star,Comment,Like" + (",Source" if source else "")
    lines = [header]
    for i, (film, star, text) in enumerate(rows):
        line = f",{film},2017-01-01,{star},{text},0"
        lines.append(line + (f",{source[i]}" if source else ""))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_prepare_keeps_a_source_per_review_and_samples_per_source(tmp_path) -> None:
    from pipeline.config import load_settings
    from pipeline.data.prepare import prepare_run

    words = ["好看", "难看", "一般", "感人", "无聊", "精彩", "失望", "喜欢"]
    rows = [(f"电影{i % 4}", i % 5 + 1, f"第{i}条{words[i % 8]}评论") for i in range(400)]
    _write_csv(tmp_path / "crawl_a.csv", rows[:300])
    _write_csv(tmp_path / "crawl_b.csv", rows[300:360])
    named = rows[360:]
    _write_csv(tmp_path / "mixed.csv", named, ["豆瓣2019" if i % 2 else "" for i in range(40)])
    settings = load_settings(
        None, run_name="multi", runs_dir=tmp_path / "runs", **{"prepare.workers": 1,
                                                                "prepare.sample": 50}
    )  # fmt: skip
    inputs = [tmp_path / n for n in ("crawl_a.csv", "crawl_b.csv", "mixed.csv")]
    summary = prepare_run(settings, inputs, progress=False)
    reviews = pd.read_parquet(settings.paths.reviews)
    counts = reviews["source"].value_counts().to_dict()
    assert counts == {"crawl_a.csv": 50, "crawl_b.csv": 50, "mixed.csv": 20, "豆瓣2019": 20}
    assert summary["sample"] == {
        "per_source": 50, "reviews": 140, "dropped": {"crawl_a.csv": 250, "crawl_b.csv": 10}
    }  # fmt: skip
    assert sum(f["reviews"] for f in summary["films"].values()) == 140
    assert summary["sources"]["crawl_b.csv"]["reviews"] == 50
    assert sum(summary["sources"]["豆瓣2019"]["stars"].values()) == 20
    a = reviews[reviews["source"] == "crawl_a.csv"]
    assert a.groupby(["film", "star"]).size().between(2, 3).all()  # 50 over 20 cells


def test_cli_film_holdout_records_intervals(demo_run, tmp_path) -> None:
    import json
    import shutil

    from typer.testing import CliRunner

    from pipeline.cli import app

    runs = tmp_path / "runs"
    shutil.copytree(demo_run.paths.root, runs / "demo")
    base = ["evaluate", "--run", "demo", "--runs-dir", str(runs)]
    result = CliRunner().invoke(
        app, [*base, "--evaluation", "film_holdout", "--models", "majority,pooled_lr"]
    )
    assert result.exit_code == 0, result.output
    assert "film_holdout" in result.output
    from pipeline.config import RunPaths

    doc = json.loads(RunPaths(runs / "demo").metrics.read_text(encoding="utf-8"))
    section = doc["evaluations"]["film_holdout"]
    assert len(section["folds"]) == 3
    assert set(section["models"]) == {"majority", "pooled_lr"}
    assert set(section["adapted"]) == {"majority", "pooled_lr"}
    lo, hi = section["models"]["pooled_lr"]["test"]["ci95"]["accuracy"]
    assert lo <= section["models"]["pooled_lr"]["test"]["accuracy"] <= hi
    assert "random" in doc["evaluations"]  # the saved models' figures are kept
    bad = CliRunner().invoke(app, [*base, "--evaluation", "sideways"])
    assert bad.exit_code == 2 and "film_holdout" in bad.output
    lone = CliRunner().invoke(app, [*base, "--adapt-prior"])
    assert lone.exit_code == 2 and "--external" in lone.output


def test_score_adapt_prior_estimates_the_batch_star_mix(demo_run, tmp_path, caplog) -> None:
    """--adapt-prior on a batch of 4-5 star reviews: the estimated mix moves up; the demo's
    tfidf_lr has too few validation reviews to show that re-weighting each review helps, so
    each review keeps its star and the log says why."""
    import json
    import logging
    import shutil

    from typer.testing import CliRunner

    from pipeline.cli import app

    runs = tmp_path / "runs"
    shutil.copytree(demo_run.paths.root, runs / "demo")
    reviews = pd.read_parquet(demo_run.paths.reviews)
    high = reviews[(reviews["split"] == "test") & (reviews["star"] >= 4)]["comment"].head(40)
    texts = tmp_path / "high.txt"
    texts.write_text("\n".join(t.replace("\n", " ") for t in high) + "\n", encoding="utf-8")
    base = ["score", "--input", str(texts), "--json", "--run", "demo", "--runs-dir", str(runs)]
    base += ["--model", "tfidf_lr"]
    with caplog.at_level(logging.INFO):
        plain, adapted = (CliRunner().invoke(app, base + ex) for ex in ([], ["--adapt-prior"]))
    assert plain.exit_code == 0 and adapted.exit_code == 0, adapted.output
    said = [m for r in caplog.records if (m := r.getMessage()).startswith("estimated star mix")]
    assert len(said) == 1 and f"of {len(high)} reviews (MAP-EM, 95% interval): 1★" in said[0]
    assert "kept each review's star" in said[0] and "too few validation reviews" in said[0]
    shares = [float(x) for x in re.findall(r"(\d+)% \(", said[0])]
    rows = [[json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
            for r in (plain, adapted)]  # fmt: skip
    assert rows[0] == rows[1]  # each review as scored
    before = np.mean([np.sum(r["probs"][3:]) for r in rows[0]])
    assert (shares[3] + shares[4]) / 100 > before  # the batch is all 4-5 stars: the mix moves up


def test_each_review_is_re_weighted_only_where_validation_shows_it_helps() -> None:
    from pipeline.modeling.quantify import app_check
    from pipeline.predict.adapt import Adaptation, adapt_records, fit_adaptation

    stars, probs = _shifted_sample(TRAIN_PRIOR, 4_000, seed=3)  # calibrated, the prior moves
    plan = fit_adaptation(stars, probs, TRAIN_PRIOR)
    assert plan.check is not None and plan.check["best"] in ("acc", "pacc", "em")
    skewed = plan.check["qwk"]["80% four and five"]
    assert plan.per_review == (skewed["adapted"] > skewed["unadapted"])
    batch_stars, batch = _shifted_sample(np.array([0.02, 0.03, 0.15, 0.4, 0.4]), 300, seed=4)

    def records() -> list[dict]:
        return [{"error": None, "probs": list(p), "pred_star": int(p.argmax()) + 1,
                 "expected_star": 0.0, "warnings": []} for p in batch]  # fmt: skip

    helps = Adaptation(plan.calibration, TRAIN_PRIOR, plan.check | {"adapt_reviews": True})
    moved = records()
    mix, each = adapt_records(moved, "em", "m", lambda: helps, say=False)
    assert each and mix[3] + mix[4] > 0.6
    assert quadratic_weighted_kappa(batch_stars, [r["pred_star"] for r in moved]) > (
        quadratic_weighted_kappa(batch_stars, batch.argmax(1) + 1)
    )
    does_not = Adaptation(plan.calibration, TRAIN_PRIOR, plan.check | {"adapt_reviews": False})
    kept = records()
    mix_too, each = adapt_records(kept, "em", "m", lambda: does_not, say=False)
    assert not each and kept == records() and mix_too == pytest.approx(mix)
    unchecked = Adaptation(plan.calibration, TRAIN_PRIOR, None)  # too few validation reviews
    assert not unchecked.per_review and "too few" in unchecked.why_not()
    given = records()
    _, each = adapt_records(given, [0, 0, 0, 0, 1], "m", lambda: unchecked, say=False)
    fives = np.mean([r["pred_star"] == 5 for r in given])
    assert each and fives > 0.9 > np.mean(batch.argmax(1) == 4)  # a mix the user gives: each
    assert app_check(stars[:50], probs[:50], TRAIN_PRIOR) is None


def test_run_film_estimates_from_saved_predictions(demo_run) -> None:
    from pipeline.analytics.quantify import film_rating_estimates
    from pipeline.run import Run

    run = Run.open(demo_run.run_name, demo_run.runs_dir)
    rows = run.probabilities("tfidf_lr")
    est = film_rating_estimates(rows, run.train_stars, run.model_prior("tfidf_lr"))[0]
    reviews = run.reviews
    test = reviews[reviews["split"] == "test"]
    assert int(est["n"].sum()) == len(test)
    assert set(est["film"]) == set(test["film"])
    for row in est.itertuples():
        assert row.pacc.sum() == pytest.approx(1.0)
        assert 1.0 <= row.em_mean <= 5.0
    with pytest.raises(InputError, match="no star probabilities"):
        run.probabilities("tfidf_ridge")
    from pipeline.reports.corpus import star_estimates

    table, choice = star_estimates(run, "tfidf_lr")
    assert table["n"].sum() == len(test)
    assert (run.kept.analytics_dir("tfidf_lr") / "star-estimates" / "manifest.json").is_file()
    kept, chosen = star_estimates(Run.open(demo_run.run_name, demo_run.runs_dir), "tfidf_lr")
    assert chosen == choice and kept.index.equals(table.index)  # read back as it was computed
    assert all(np.array_equal(a, b) for a, b in zip(kept["em"], table["em"], strict=True))
    assert star_estimates(run, "majority") is None  # the same probabilities for every review
    assert star_estimates(run, "tfidf_ridge") is None  # no probabilities at all


def test_calibration_undoes_a_known_flattening_and_bias() -> None:
    stars, probs = _shifted_sample(TRAIN_PRIOR, 5_000, seed=7)
    flat = Calibration(2.0).apply(probs)  # an under-confident model: T = 2 flattened its output
    assert fit_calibration(flat, stars, bias=False).temperature == pytest.approx(0.5, abs=0.08)
    assert np.allclose(Calibration(0.5).apply(flat), probs, atol=1e-6)
    assert fit_calibration(probs, stars).temperature == pytest.approx(1.0, abs=0.15)
    # a model that leans to 5 stars: BCTS finds the lean (one bias per star) and takes it off
    lean = (-0.3, -0.3, 0.0, 0.0, 0.6)
    leaning = Calibration(1.5, lean).apply(probs)
    fitted = fit_calibration(leaning, stars)
    assert fitted.temperature == pytest.approx(1 / 1.5, abs=0.1)
    undone = fitted.apply(leaning)
    assert np.abs(undone - probs).mean() < 0.02
    assert fitted.bias[4] < fitted.bias[0] - 0.5


def test_balanced_tfidf_predicts_the_rare_stars_more_often(demo_run) -> None:
    from pipeline.modeling.baselines import LinearStarModel

    data = TrainingData.load(demo_run.paths)
    split = data.reviews["split"].to_numpy()
    train, val = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    # a skewed training mix: keep every 5-star review, a third of the rest
    train = train[(data.stars[train] == 5) | (train % 3 == 0)]
    models = [LinearStarModel.fit_tfidf(data.source, train, val, data.stars, balanced=b)
              for b in (False, True)]  # fmt: skip
    assert models[1].config["balanced"] and "balanced" not in models[0].config
    fives = [float((m.predict(data.source, val).pred_star == 5).mean()) for m in models]
    assert fives[1] < fives[0]  # the over-represented star is no longer the easy answer


def test_film_report_shows_the_estimated_beside_the_true_star_mix(demo_run) -> None:
    from pipeline.reports.film import FilmReport
    from pipeline.reports.render import render_film, render_index
    from pipeline.run import Run

    run = Run.open(demo_run.run_name, demo_run.runs_dir)
    film = run.films["film"].iloc[0]
    report = FilmReport.build(run, film, "tfidf_lr", tsne_cap=50)
    est = report.star_estimate
    test = run.reviews[(run.reviews["split"] == "test") & (run.reviews["film"] == film)]
    assert est["n"] == len(test)
    true = np.bincount(test["star"] - 1, minlength=5) / len(test)
    assert np.allclose(est["true"], true)
    assert sum(est["estimated"]) == pytest.approx(1.0)
    assert est["abs_error"] == pytest.approx(abs(est["estimated_mean"] - test["star"].mean()))
    # the demo's ~100 validation reviews are too few for the APP check: EM, said unvalidated
    assert est["method"] == ("em" if len(test) >= 30 else "pcc")
    assert est["validated_error"] is None
    page = render_film(report)
    assert "Star mix estimated from the text" in page
    assert f"estimated ({est['method'].upper()})" in page
    assert html.escape(est["note"]) in page
    assert FilmReport.build(run, film, "tfidf_ridge", tsne_cap=50).star_estimate is None
    assert "Estimate" in render_index(run, "tfidf_lr", {}, tsne_cap=50)


def test_the_run_picks_its_quantifier_on_validation_with_intervals(demo_run) -> None:
    """With enough validation reviews the APP check picks the method and every film gets an
    interval; the report says which method, its validated error and the interval."""
    from pipeline.analytics.quantify import film_rating_estimates, labelled_probabilities
    from pipeline.modeling.quantify import app_check
    from pipeline.reports.sections import estimate_note
    from pipeline.run import Run

    run = Run.open(demo_run.run_name, demo_run.runs_dir)
    rows, prior = run.probabilities("tfidf_lr"), run.model_prior("tfidf_lr")
    labelled = labelled_probabilities(rows, run.train_stars, prior, "test")
    table, choice = film_rating_estimates(rows, run.train_stars, prior)
    assert choice["method"] == "em" and choice["validated_error"] is None  # ~100 val reviews
    assert (table["low"] <= table["high"]).all()
    # a run with enough validation reviews: its own test split stands in for them here
    check = app_check(labelled.stars, labelled.probs, labelled.prior, reps=4)
    if check is not None:
        assert check["best"] in METHODS
        assert check["median_abs_error"][check["best"]] == min(check["median_abs_error"].values())
    note = estimate_note({"method_name": "adjusted mean probability (PACC)", "interval": [3.1, 3.4],
                          "estimated_mean": 3.25, "abs_error": 0.1, "validated_error": 0.09,
                          "validated_on": 5095})  # fmt: skip
    assert "3.10-3.40" in note and "5,095 validation reviews" in note and "0.09" in note


def test_star_cutpoints_reproduce_the_training_star_mix() -> None:
    from pipeline.modeling.baselines import _from_values, star_cutpoints

    rng = np.random.default_rng(0)
    stars = rng.choice(np.arange(1, 6), size=2000, p=[0.4, 0.1, 0.1, 0.1, 0.3])
    scores = 3.0 + 0.3 * (stars - 3) + rng.normal(0, 0.2, size=2000)  # squeezed towards 3
    cut = _from_values(scores, star_cutpoints(scores, stars)).pred_star
    rounded = _from_values(scores).pred_star
    share = np.bincount(cut, minlength=6)[1:] / len(cut)
    assert np.allclose(share, [0.4, 0.1, 0.1, 0.1, 0.3], atol=0.02)
    assert set(rounded) <= {2, 3, 4}  # rounding never reaches the ends
    assert quadratic_weighted_kappa(stars, cut) > quadratic_weighted_kappa(stars, rounded)


def test_ridge_keeps_its_cutpoints_through_save_and_load(demo_run) -> None:
    from pipeline.modeling.baselines import LinearStarModel

    data = TrainingData.load(demo_run.paths)
    split = data.reviews["split"].to_numpy()
    train, val = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    model = LinearStarModel.fit_tfidf(data.source, train, val, data.stars, True, grid=(1 / 3, 1.0))
    assert model.cutpoints is not None and np.all(np.diff(model.cutpoints) >= 0)
    assert set(model.config["validation"]) == {str(1 / 3), "1.0"}
    again = LinearStarModel.from_saved(model.tensors(), model.config)
    first, second = model.predict(data.source, val), again.predict(data.source, val)
    assert np.array_equal(first.pred_star, second.pred_star)
    assert set(first.pred_star) >= {1, 5}  # the cut reaches both ends of the scale


def _biased_probs(n: int = 300) -> np.ndarray:
    """Mild, varied probabilities leaning to 3 stars: plain EM runs them all onto 3."""
    z = np.random.default_rng(0).normal(0, 0.6, (n, 5))
    z[:, 2] += 0.35
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def test_the_guard_fires_on_a_degenerate_case() -> None:
    from pipeline.modeling.prior import COLLAPSE_SHARE, adapt_probs, collapsed, star_piles

    probs, uniform = _biased_probs(), np.full(5, 0.2)
    runaway = em_prior(probs, uniform)[0]
    assert star_piles(runaway)[2] == 1.0 and star_piles(probs)[2] < 0.4
    assert "100% of the reviews on 3 stars" in collapsed(runaway, probs)
    adapted, mix, warning = adapt_probs(probs, uniform)
    assert warning is not None and np.array_equal(adapted, probs)  # the unadapted stars stay
    assert mix.sum() == pytest.approx(1.0) and mix.argmax() == 2  # the estimate still reported
    assert collapsed(probs, probs) is None and star_piles(probs).max() < COLLAPSE_SHARE


@pytest.mark.real_data
@pytest.mark.slow
def test_em_on_a_skewed_slice_of_a_real_corpus_does_not_collapse(demo_run, shared_data) -> None:
    from pipeline.modeling.calibration import saved_calibration
    from pipeline.modeling.prior import EM_STRENGTH, adapt_probs
    from pipeline.predict.adapt import model_prior
    from pipeline.predict.scorer import Scorer

    reviews = pd.read_csv(shared_data / "douban_2016_4films.csv").dropna(subset=["Comment"])
    mix = {1: 0.02, 2: 0.03, 3: 0.15, 4: 0.4, 5: 0.4}  # a crawl of well-liked films
    picked = pd.concat(
        reviews[reviews["Star"] == star].sample(int(500 * share), random_state=0)
        for star, share in mix.items()
    )
    scorer = Scorer.load(demo_run.run_name, "tfidf_lr", runs_dir=demo_run.runs_dir)
    records = scorer.score_records(picked["Comment"].astype(str).tolist(), explain=False)
    probs = saved_calibration(scorer.paths.predictions, "tfidf_lr").apply(
        np.array([r["probs"] for r in records])
    )
    start, stars = model_prior(scorer.paths, scorer.config), picked["Star"].to_numpy()
    map_em = em_prior(probs, start, strength=EM_STRENGTH)[0]
    adapted, _, _ = adapt_probs(probs, start)
    for out in (map_em, adapted):
        piles = np.bincount(out.argmax(1), minlength=5) / len(out)
        assert piles.max() <= 0.6
        before = quadratic_weighted_kappa(stars, probs.argmax(1) + 1)
        assert quadratic_weighted_kappa(stars, out.argmax(1) + 1) >= before - 0.05
