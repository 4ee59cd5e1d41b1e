"""`embedclf data ...`, `embedclf feedback`, `heads train --dataset/--with-feedback/--search` and the
embedding cache through the CLI, against the real Postgres (and the real MiniLM where it trains)."""

from __future__ import annotations

import csv
import json

import pytest
from sqlalchemy import text

from embedclf.data import load_labeled
from embedclf.demo import HOLDOUT_CSV, TRAIN_CSV
from embedclf.store import embcache
from embedclf.store import repository as repo
from tests.conftest import one_line_error

pytestmark = pytest.mark.postgres


@pytest.fixture
def db(clean_db):
    with clean_db.begin() as conn:
        conn.execute(text("TRUNCATE datasets, examples, feedback, embedding_cache RESTART IDENTITY CASCADE"))
    return clean_db


HOSTILE = ['comma, "quotes" and\nnewline', "émoji 🙂 and tab\there", "  leading space", "plain"]


def test_import_list_export_round_trip(run, db, tmp_path):
    src = tmp_path / "in.csv"
    with src.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["body", "intent"])
        w.writerows([(t, f"l{i % 2}") for i, t in enumerate(HOSTILE)])
        w.writerow([HOSTILE[0], "l0"])  # exact duplicate
        w.writerow(["", "l1"])  # no text: skipped
    r = run("data", "import", "--dataset", "mine", str(src), "--text-col", "body", "--label-col", "intent")
    assert "dataset 'mine' (new): 4 examples added, 1 duplicates skipped, 1 rows without text" in r.output
    r = run("data", "import", "--dataset", "mine", str(src), "--text-col", "body", "--label-col", "intent")
    assert "0 examples added, 5 duplicates skipped" in r.output
    listed = json.loads(run("data", "list", "--json").stdout)
    assert [(d["name"], d["examples"], d["labels"]) for d in listed] == [("mine", 4, 2)]
    assert "mine" in run("data", "list").output
    for suffix in ("csv", "tsv", "jsonl"):
        out = tmp_path / f"out.{suffix}"
        run("data", "export", "--dataset", "mine", "--out", str(out))
        back = load_labeled(out)
        assert back.texts == HOSTILE and back.labels == ["l0", "l1", "l0", "l1"]
    stdout = run("data", "export", "--dataset", "mine").stdout
    rows = list(csv.DictReader(stdout.splitlines(keepends=True)))
    assert [r["text"] for r in rows] == HOSTILE
    # the export imports back into an identical dataset
    run("data", "import", "--dataset", "copy", str(tmp_path / "out.jsonl"))
    assert run("data", "export", "--dataset", "copy").stdout == stdout
    assert "deleted dataset 'copy' (4 examples)" in run("data", "delete", "--dataset", "copy", "--yes").output


def test_data_and_train_bad_input(run, db, tmp_path):
    one_line_error(run("data", "import", "--dataset", "x", str(tmp_path / "nope.csv"), ok=False), "no such file")
    bad = tmp_path / "bad.csv"
    bad.write_text("text,category\nhello,a\n")
    one_line_error(run("data", "import", "--dataset", "x", str(bad), ok=False), "no column 'label'")
    one_line_error(run("data", "export", "--dataset", "ghost", ok=False), "no dataset 'ghost'")
    run("data", "import", "--dataset", "x", str(bad), "--label-col", "category")
    one_line_error(run("data", "export", "--dataset", "x", "--out", str(tmp_path / "o.xlsx"), ok=False),
                   ".csv, .tsv or .jsonl")
    one_line_error(run("heads", "train", "--name", "h", ok=False), "exactly one of --data FILE or --dataset NAME")
    one_line_error(run("heads", "train", "--name", "h", "--data", str(bad), "--dataset", "x", ok=False),
                   "exactly one of")
    one_line_error(run("heads", "train", "--name", "h", "--data", str(bad), "--with-feedback", ok=False),
                   "--with-feedback needs --dataset")
    one_line_error(run("heads", "train", "--name", "h", "--dataset", "ghost", ok=False), "no dataset 'ghost'")


def _head_and_rows(engine):
    from embedclf.heads.checkpoint import HeadArtifact
    from embedclf.heads.mlp import HeadConfig, MLPHead

    for name, labels in (("intent", ["billing", "tech"]), ("urgency", ["low", "high"])):
        head = MLPHead(HeadConfig(input_dim=8, num_labels=2, hidden_dim=4))
        repo.add_head_version(engine, name, HeadArtifact.from_head(head, labels, "fake:8"))
    repo.write_predictions(engine, [
        {"task_id": "t1", "head_name": "intent", "status": "ok", "label": "tech", "text": "my invoice is wrong"},
        {"task_id": "t1", "head_name": "urgency", "status": "ok", "label": "low", "text": "my invoice is wrong"},
        {"task_id": "t2", "head_name": "intent", "status": "ok", "label": "tech", "text": "charged twice"},
    ])


def test_feedback_command(run, db):
    _head_and_rows(db)
    one_line_error(run("feedback", "nope", "billing", ok=False), "no prediction for task 'nope'")
    one_line_error(run("feedback", "t1", "billing", ok=False), "2 heads (intent, urgency): pass --head")
    one_line_error(run("feedback", "t2", "refund", ok=False), "'refund' is not a label of head 'intent'",
                   "billing, tech")
    one_line_error(run("feedback", "t2", "low", "--head", "urgency", ok=False), "no prediction of head 'urgency'")
    r = run("feedback", "t1", "billing", "--head", "intent", "--note", "invoice = billing")
    assert "feedback stored: task t1 head 'intent' label 'billing'" in r.output
    assert "head 'intent'" in run("feedback", "t2", "billing").output  # the task's only head
    with db.connect() as conn:
        rows = conn.execute(text("SELECT task_id, head_name, label, note, source FROM feedback ORDER BY id")).all()
    assert [tuple(r) for r in rows] == [("t1", "intent", "billing", "invoice = billing", "cli"),
                                        ("t2", "intent", "billing", None, "cli")]


def test_search_stores_trials_in_train_params(run, db):
    run("data", "import", "--dataset", "support", str(TRAIN_CSV))
    report = json.loads(run("heads", "train", "--name", "s", "--dataset", "support", "--search", "3",
                            "--epochs", "10", "--json").stdout)
    shown = json.loads(run("heads", "show", "s").stdout)
    search = shown["train_params"]["search"]
    assert search["n_trials"] == 3 and len(search["trials"]) == 3
    best = search["trials"][search["best_trial"]]
    assert best["val_accuracy"] == max(t["val_accuracy"] for t in search["trials"])
    assert shown["train_params"]["lr"] == best["lr"] and shown["train_params"]["epochs"] == best["epochs"]
    # the search's embeddings were reused: every text embedded once in this process
    assert report["embedding_cache"]["embedded"] == report["n_train"] + report["n_test"]


def test_evaluate_reads_the_cache_and_no_cache_bypasses_it(run, db):
    args = ("evaluate", "--train", str(TRAIN_CSV), "--test", str(HOLDOUT_CSV), "--epochs", "5", "--json")
    first = json.loads(run(*args).stdout)
    n = first["n_train"] + first["n_test"]
    assert first["embedding_cache"] == {"cached": 0, "embedded": n}
    second = json.loads(run(*args).stdout)
    assert second["embedding_cache"] == {"cached": n, "embedded": 0}
    assert second["accuracy"] == first["accuracy"]
    embcache.clear(db)
    third = json.loads(run(*args, "--no-cache").stdout)
    assert third["embedding_cache"] == {"cached": 0, "embedded": n} and embcache.count(db) == 0


@pytest.mark.slow
def test_train_from_dataset_with_minilm_cache_hits_and_feedback(run, db):
    """Real MiniLM: the second training embeds 0 texts and reproduces the first; feedback joins the retrain."""
    env = {"EMBEDCLF_EMBEDDER": "minilm"}
    run("data", "import", "--dataset", "support", str(TRAIN_CSV))
    n = len(load_labeled(TRAIN_CSV).texts)
    first = json.loads(run("heads", "train", "--name", "support", "--dataset", "support", "--epochs", "15",
                           "--json", env=env).stdout)
    assert first["embedding_cache"] == {"cached": 0, "embedded": n} and first["dataset"] == "support"
    r = run("heads", "train", "--name", "support", "--dataset", "support", "--epochs", "15", env=env)
    assert f"embedding cache (Postgres): {n} texts cached, 0 embedded" in r.output
    v2 = repo.load_head(db, "support", 2)[0]
    assert v2.metrics["accuracy"] == first["accuracy"]  # same vectors from the cache, same head
    assert embcache.count(db, "st:all-MiniLM-L6-v2") == n
    # a production prediction corrected by an operator becomes a training example
    new_text = "The parcel tracking page says delivered but nothing arrived"
    repo.write_predictions(db, [{"task_id": "prod-1", "head_name": "support", "status": "ok",
                                 "label": "technical_issue", "text": new_text}])
    run("feedback", "prod-1", "shipping", env=env)
    third = json.loads(run("heads", "train", "--name", "support", "--dataset", "support", "--with-feedback",
                           "--epochs", "15", "--json", env=env).stdout)
    assert third["n_feedback"] == 1 and third["n_train"] + third["n_test"] == n + 1
    assert third["embedding_cache"] == {"cached": n, "embedded": 1}  # only the feedback text is new
