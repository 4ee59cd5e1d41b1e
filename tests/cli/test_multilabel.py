"""``heads train --multi-label`` and ``evaluate --multi-label`` on small synthetic files (fake embedder)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from embedclf.cli.base import AppError
from embedclf.cli.multilabel import split_labels
from embedclf.embedders.fake import FakeEmbedder
from embedclf.store import repository as repo
from embedclf.training import mlmetrics
from tests.conftest import one_line_error
from tests.helpers import ML_TOPICS, multilabel_texts, write_multilabel_csv

pytestmark = [pytest.mark.postgres]
FAST = ("--epochs", "12")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("ml")
    return {"train": write_multilabel_csv(d / "train.csv", 400, seed=1),
            "test": write_multilabel_csv(d / "test.csv", 120, seed=2),
            "dev": write_multilabel_csv(d / "dev.csv", 100, seed=3),
            "pipes": write_multilabel_csv(d / "pipes.csv", 100, seed=4, sep="|")}


def test_split_labels():
    assert split_labels(["b;a", " a ;; c", "a"], ";") == [["a", "b"], ["a", "c"], ["a"]]
    with pytest.raises(AppError, match="at least 2 distinct labels"):
        split_labels(["a", "a;a"], ";")
    with pytest.raises(AppError, match="wrong --label-sep"):
        split_labels(["a|b", "c"], ";")
    with pytest.raises(AppError, match="row 2 has no label"):
        split_labels(["a;b", ";"], ";")


def test_evaluate_multi_label_json(run, files, tmp_path):
    r = run("evaluate", "--train", str(files["train"]), "--test", str(files["test"]), "--label-col", "labels",
            "--multi-label", "--label-sep", ";", *FAST, "--json", "--no-cache", "--plots", str(tmp_path / "p"))
    s = json.loads(r.stdout)
    for k in ("macro_f1", "micro_f1", "samples_jaccard", "baseline_tfidf_macro_f1", "n_train", "n_test", "embedder"):
        assert k in s, k
    assert s["n_test"] == 120 and s["n_train"] + s["n_val"] == 400 and s["embedder"] == "fake:64"
    assert s["macro_f1"] > 0.8 and 0 <= s["samples_jaccard"] <= 1
    names = sorted(Path(p).name for p in s["plots"])
    assert names == ["evaluate-label_f1.png", "evaluate-report.json", "evaluate-report.md"]
    assert (tmp_path / "p" / "evaluate-label_f1.png").stat().st_size > 10_000
    md = (tmp_path / "p" / "evaluate-report.md").read_text()
    assert all(f"| {label} |" in md for label in ML_TOPICS)
    # a validation file replaces the slice of the training file
    r = run("evaluate", "--train", str(files["train"]), "--test", str(files["test"]), "--val", str(files["dev"]),
            "--label-col", "labels", "--multi-label", *FAST, "--json", "--no-cache")
    s = json.loads(r.stdout)
    assert s["n_train"] == 400 and s["n_val"] == 100


def test_heads_train_multi_label_stores_the_head_type(run, clean_db, files, tmp_path):
    r = run("heads", "train", "--name", "tags", "--data", str(files["train"]), "--label-col", "labels",
            "--multi-label", *FAST, "--json", "--no-cache")
    s = json.loads(r.stdout)
    assert s["head"] == "tags" and s["version"] == 1 and s["head_type"] == "multi_label"
    assert s["n_test"] == 80 and s["macro_f1"] > 0.8
    meta, art = repo.load_head(clean_db, "tags")
    assert art.config.head_type == "multi_label" and len(art.config.thresholds) == len(ML_TOPICS)
    assert meta.labels == sorted(ML_TOPICS) and meta.metrics["report"]["head_type"] == "multi_label"
    shown = json.loads(run("heads", "show", "tags").stdout)
    assert shown["config"]["head_type"] == "multi_label"
    # heads list shows a multi-label version's macro-F1, labelled as such (accuracy does not apply)
    row = next(line for line in run("heads", "list").output.splitlines() if line.startswith("tags"))
    assert f"macro-F1 {s['macro_f1']:.4f}" in row
    listed = json.loads(run("heads", "list", "--json").stdout)[0]
    assert listed["accuracy"] is None and listed["macro_f1"] == s["macro_f1"] and listed["score"] == s["macro_f1"]
    assert listed["score_metric"] == "macro-F1"
    r = run("heads", "report", "tags", "--out", str(tmp_path / "rep"))
    assert "macro-F1" in r.output and (tmp_path / "rep" / "tags-v1-label_f1.png").is_file()
    # the separator is a choice: the same data joined by '|'; with the TF-IDF member, through JSONB and back
    r = run("heads", "train", "--name", "tags", "--data", str(files["pipes"]), "--label-col", "labels",
            "--multi-label", "--label-sep", "|", "--sparse-member", *FAST, "--json", "--no-cache")
    s2 = json.loads(r.stdout)
    assert s2["version"] == 2 and len(s2["member_weights"]) == 3
    _, art = repo.load_head(clean_db, "tags", 2)
    parts = art.config.sparse["parts"]  # JSONB sorts object keys: the column order must survive it
    assert ([p["name"] for p in parts] if isinstance(parts, list) else list(parts)) == ["word", "char"]
    module = art.build()
    texts, sets = multilabel_texts(150, seed=9)
    Y = mlmetrics.multi_hot(sets, art.labels)
    P = module.predict(FakeEmbedder(64).embed(texts), texts)
    assert mlmetrics.macro_f1(Y, P) > 0.8
    # the sparse member's own probabilities are those of a working model (permuted columns would not be):
    # its top label is one of the text's labels (threshold-free: the member is strongly regularised, C 0.3,
    # so on 150 training texts its probabilities stay near the labels' base rates)
    sparse_p = module.member_proba(FakeEmbedder(64).embed(texts), texts)[2]
    top_right = Y[np.arange(len(Y)), sparse_p.argmax(1)].mean()
    permuted = Y[np.arange(len(Y)), np.roll(np.arange(Y.shape[1]), 1)[sparse_p.argmax(1)]].mean()
    assert top_right > 0.9 and permuted < 0.5  # (measured: 0.98 and 0.10)


def test_min_and_max_labels_are_stored_with_the_head_and_decide(run, clean_db, files):
    """``--min-labels 2 --max-labels 2``: stored in the head's config, and every test text gets exactly two labels."""
    r = run("heads", "train", "--name", "two", "--data", str(files["train"]), "--label-col", "labels",
            "--multi-label", "--min-labels", "2", "--max-labels", "2", *FAST, "--json", "--no-cache")
    s = json.loads(r.stdout)
    _, art = repo.load_head(clean_db, "two")
    assert (art.config.min_labels, art.config.max_labels) == (2, 2)
    assert s["cardinality_pred"] == pytest.approx(2.0)
    r = run("evaluate", "--train", str(files["train"]), "--test", str(files["test"]), "--label-col", "labels",
            "--multi-label", "--min-labels", "0", "--max-labels", "1", *FAST, "--json", "--no-cache")
    assert json.loads(r.stdout)["cardinality_pred"] <= 1.0
    one_line_error(run("heads", "train", "--name", "x", "--data", str(files["train"]), "--label-col", "labels",
                       "--multi-label", "--min-labels", "99", ok=False), "more than the")
    for args, words in ((("--min-labels", "1"), "are for --multi-label"),
                        (("--multi-label", "--min-labels", "3", "--max-labels", "2"), "is more than --max-labels"),
                        (("--multi-label", "--knn-member", "on"), "is for single-label heads")):
        r = run("evaluate", "--train", str(files["train"]), "--test", str(files["test"]), "--label-col", "labels",
                *args, ok=False)
        assert r.exit_code == 2 and words in r.stderr, r.stderr


def test_bad_multi_label_inputs_are_one_line_errors(run, clean_db, files, tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("text,labels\nhello,\nworld,\n")
    one_line_error(run("evaluate", "--train", str(empty), "--test", str(files["test"]), "--label-col", "labels",
                       "--multi-label", ok=False), "no labelled rows")
    one_line_error(run("evaluate", "--train", str(files["pipes"]), "--test", str(files["test"]), "--label-col",
                       "labels", "--multi-label", ok=False), "wrong --label-sep")
    one_line_error(run("heads", "train", "--name", "x", "--data", str(files["train"]), "--label-col", "labels",
                       "--multi-label", "--label-sep", "", ok=False), "--label-sep")
    r = run("evaluate", "--train", str(files["train"]), "--test", str(files["test"]), "--val", str(files["dev"]),
            ok=False)
    assert r.exit_code == 2 and "are for --multi-label" in r.stderr  # a usage error


def test_bench_mlheads_compares_variants_without_test_data(run, files):
    r = run("bench", "mlheads", "--train", str(files["train"]), "--dev", str(files["dev"]), "--variants",
            "default,dense-unweighted,sparse", "--epochs", "8", "--json", "--no-cache")
    rep = json.loads(r.stdout)
    assert rep["mode"] == "dev" and rep["n"] == 400 and rep["n_held"] == 100 and rep["reference"] == "default"
    v = rep["variants"]
    assert set(v) == {"default", "dense-unweighted", "sparse"} and v["default"]["mean_diff"] == 0
    assert len(v["sparse"]["member_weights"]) == 3 and all(x["macro_f1"] > 0.7 for x in v.values())
    r = run("bench", "mlheads", "--train", str(files["train"]), "--folds", "2", "--variants", "default",
            "--epochs", "5", "--json", "--no-cache")
    rep = json.loads(r.stdout)
    assert rep["mode"] == "2-fold" and len(rep["variants"]["default"]["fold_macro_f1"]) == 2
    one_line_error(run("bench", "mlheads", "--train", str(files["train"]), "--variants", "bogus", ok=False),
                   "bogus")
