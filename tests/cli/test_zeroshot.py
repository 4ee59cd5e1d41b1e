"""``embedclf heads zeroshot``: build from label names/descriptions, evaluate, store, serve."""

from __future__ import annotations

import json

import pytest

from embedclf.demo import HOLDOUT_CSV, TRAIN_CSV
from embedclf.store import repository as repo
from tests.conftest import one_line_error

pytestmark = pytest.mark.postgres


def test_labels_with_descriptions_stored_inactive_then_activated(run, clean_db, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("label,description\nbilling,charges invoices and refunds\nshipping,\n"
                      "bug_report,the app crashes\n")
    r = run("heads", "zeroshot", "triage", "--labels", str(labels))
    assert "3 labels, embedder fake:64" in r.output and "version 1 (not active" in r.output
    assert repo.active_versions(clean_db) == {}
    r = run("heads", "zeroshot", "triage", "--labels", str(labels), "--activate", "--temperature", "0.1", "--json")
    out = json.loads(r.stdout)
    assert out["version"] == 2 and out["active"] is True and out["described_labels"] == 2
    assert repo.active_versions(clean_db) == {"triage": 2}
    shown = json.loads(run("heads", "show", "triage").stdout)
    assert shown["labels"] == ["billing", "shipping", "bug_report"]
    assert shown["train_params"] == {"kind": "zeroshot", "temperature": 0.1, "label_texts": {
        "billing": "charges invoices and refunds", "shipping": "shipping", "bug_report": "the app crashes"}}
    assert shown["config"]["num_layers"] == 1
    (meta,) = [v for v in repo.list_heads(clean_db, "triage") if v.version == 2]
    assert meta.n_train == 0


def test_labels_from_a_txt_list_and_from_a_labelled_file(run, clean_db, tmp_path):
    txt = tmp_path / "labels.txt"
    txt.write_text("card_arrival\nlost_or_stolen_card\n\ncard_arrival\n")
    out = json.loads(run("heads", "zeroshot", "b", "--labels", str(txt), "--no-store", "--json").stdout)
    assert out["n_labels"] == 2 and "version" not in out
    out = json.loads(run("heads", "zeroshot", "demo", "--labels", str(TRAIN_CSV), "--json").stdout)
    assert out["n_labels"] == 6 and out["described_labels"] == 0 and out["version"] == 1


def test_no_store_needs_no_database(run, tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("label\na\nb\n")
    r = run("heads", "zeroshot", "x", "--labels", str(labels), "--no-store",
            env={"EMBEDCLF_DATABASE_URL": "postgresql+psycopg2://postgres@127.0.0.1:1/x"})
    assert "zero-shot head 'x': 2 labels" in r.output and "stored" not in r.output


def test_bad_inputs_are_one_line_errors(run, clean_db, tmp_path):
    one = tmp_path / "one.csv"
    one.write_text("label\nonly\n")
    one_line_error(run("heads", "zeroshot", "x", "--labels", str(one), ok=False), "at least 2 labels")
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("name\na\nb\n")
    one_line_error(run("heads", "zeroshot", "x", "--labels", str(nocol), ok=False), "no column 'label'", "name")
    blank = tmp_path / "blank.csv"
    blank.write_text("label\na\n\"  \"\n")
    one_line_error(run("heads", "zeroshot", "x", "--labels", str(blank), ok=False), "row 2 has an empty label")
    one_line_error(run("heads", "zeroshot", "x", "--labels", str(tmp_path / "missing.csv"), ok=False),
                   "no such file")
    two = tmp_path / "two.csv"
    two.write_text("label\nbilling\nshipping\n")
    one_line_error(run("heads", "zeroshot", "x", "--labels", str(two), "--eval", str(HOLDOUT_CSV), ok=False),
                   "4 label(s)", "not among the head's labels")
    r = run("heads", "zeroshot", "x", "--labels", str(two), "--no-store", "--activate", ok=False)
    assert r.exit_code != 0 and "--no-store" in r.stderr
    r = run("heads", "zeroshot", " ", "--labels", str(two), ok=False)
    assert r.exit_code != 0 and "1-128 characters" in r.stderr
    assert repo.list_heads(clean_db) == []


@pytest.mark.slow
def test_minilm_zero_shot_evaluated_on_the_demo_holdout(run, clean_db):
    r = run("heads", "zeroshot", "support", "--labels", str(TRAIN_CSV), "--eval", str(HOLDOUT_CSV), "--activate",
            "--json", env={"EMBEDCLF_EMBEDDER": "minilm"})
    out = json.loads(r.stdout)
    assert out["embedder"] == "st:all-MiniLM-L6-v2" and out["n_test"] == 90 and out["n_labels"] == 6
    assert out["accuracy"] > 0.5 and out["top3_accuracy"] >= out["accuracy"]  # chance: 1/6 (see tests/heads)
    assert out["accuracy"] <= out["map3"] <= out["top3_accuracy"]
    meta, _ = repo.load_head(clean_db, "support")
    assert meta.metrics["accuracy"] == out["accuracy"] and meta.metrics["kind"] == "zeroshot"
    listed = run("heads", "list").output
    assert "support" in listed and str(out["accuracy"]) in listed
