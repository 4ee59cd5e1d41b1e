"""Datasets, examples and feedback in the real Postgres."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from embedclf.heads.checkpoint import HeadArtifact
from embedclf.heads.mlp import HeadConfig, MLPHead
from embedclf.store import datasets as ds
from embedclf.store import repository as repo

pytestmark = pytest.mark.postgres


@pytest.fixture
def db(clean_db):
    with clean_db.begin() as conn:
        conn.execute(text("TRUNCATE datasets, examples, feedback RESTART IDENTITY CASCADE"))
    return clean_db


def _head(engine, name: str, labels: list[str]) -> None:
    head = MLPHead(HeadConfig(input_dim=8, num_labels=len(labels), hidden_dim=4))
    repo.add_head_version(engine, name, HeadArtifact.from_head(head, labels, "fake:8"))


def _prediction(engine, task_id: str, head: str | None, text_: str | None, label: str = "a") -> None:
    row = {"task_id": task_id, "head_name": head, "text": text_}
    row.update({"status": "ok", "label": label} if head else {"status": "error", "error": "bad"})
    assert repo.write_predictions(engine, [row]) == 1


def test_import_dedupes_exact_duplicates_and_round_trips(db):
    texts = ["refund please", "refund please", "refund please", "app crashes", "x" * 10_000, "émoji 🙂"]
    labels = ["billing", "billing", "refund", "tech", "long", "misc"]
    res = ds.import_examples(db, "support", texts, labels, created_by="alice")
    assert res.created and res.inserted == 5 and res.duplicates == 1  # same text + same label once
    again = ds.import_examples(db, "support", texts[:4] + ["new one"], labels[:4] + ["tech"])
    assert not again.created and again.inserted == 1 and again.duplicates == 4
    got_t, got_y = ds.fetch_examples(db, "support")
    assert got_t == ["refund please", "refund please", "app crashes", "x" * 10_000, "émoji 🙂", "new one"]
    assert got_y == ["billing", "refund", "tech", "long", "misc", "tech"]
    (info,) = ds.list_datasets(db)
    assert (info.name, info.n_examples, info.n_labels, info.created_by) == ("support", 6, 5, "alice")


def test_unknown_dataset_and_bad_input(db):
    ds.import_examples(db, "a", ["t"], ["y"])
    with pytest.raises(ds.DatasetNotFound, match="no dataset 'b' \\(datasets: a\\)"):
        ds.fetch_examples(db, "b")
    with pytest.raises(ValueError, match="NUL"):
        ds.import_examples(db, "a", ["bad\x00"], ["y"])
    with pytest.raises(ValueError, match="1-128"):
        ds.import_examples(db, " ", ["t"], ["y"])
    assert ds.delete_dataset(db, "a") == 1
    assert ds.list_datasets(db) == []
    with db.connect() as conn:  # examples went with their dataset
        assert conn.execute(text("SELECT count(*) FROM examples")).scalar() == 0


def test_feedback_validation(db):
    _head(db, "intent", ["a", "b"])
    _head(db, "urgency", ["low", "high"])
    _prediction(db, "t1", "intent", "hello")
    _prediction(db, "t1", "urgency", "hello", "low")
    _prediction(db, "t2", "intent", "other")
    _prediction(db, "t3", None, None)
    with pytest.raises(ds.FeedbackError, match="no prediction for task 'nope'"):
        ds.add_feedback(db, "nope", "a")
    with pytest.raises(ds.FeedbackError, match="2 heads \\(intent, urgency\\): pass --head"):
        ds.add_feedback(db, "t1", "a")
    with pytest.raises(ds.FeedbackError, match="'c' is not a label of head 'intent' \\(labels: a, b\\)"):
        ds.add_feedback(db, "t2", "c")
    with pytest.raises(ds.FeedbackError, match="no prediction of head 'urgency'"):
        ds.add_feedback(db, "t2", "high", "urgency")
    with pytest.raises(ds.FeedbackError, match="0 heads"):
        ds.add_feedback(db, "t3", "a")
    assert ds.add_feedback(db, "t2", "b", note="was a") == "intent"  # the task's only head
    assert ds.add_feedback(db, "t1", "high", "urgency", created_by="bob") == "urgency"
    rows = ds.list_feedback(db)
    assert [(r["task_id"], r["head_name"], r["label"], r["predicted"], r["text"]) for r in rows] == [
        ("t1", "urgency", "high", "low", "hello"), ("t2", "intent", "b", "a", "other")]
    assert rows[0]["created_by"] == "bob" and rows[1]["note"] == "was a"


def test_training_examples_add_feedback_latest_wins(db):
    _head(db, "intent", ["a", "b", "c"])
    ds.import_examples(db, "d", ["one", "two", "hello"], ["a", "b", "a"])
    _prediction(db, "t1", "intent", "hello")     # in the dataset as 'a': feedback corrects it
    _prediction(db, "t2", "intent", "brand new")  # a new example
    _prediction(db, "t3", "intent", "ignored")    # no feedback
    ds.add_feedback(db, "t1", "b")
    ds.add_feedback(db, "t1", "c")  # the latest label of a task wins
    ds.add_feedback(db, "t2", "b")
    with db.begin() as conn:  # other apps insert directly; feedback on another head is not used
        conn.execute(text("INSERT INTO feedback (task_id, head_name, label) VALUES ('t3', 'other', 'z')"))
    texts, labels, n_fb = ds.training_examples(db, "d", "intent")
    assert n_fb == 2
    assert dict(zip(texts, labels)) == {"one": "a", "two": "b", "hello": "c", "brand new": "b"}
    assert len(texts) == 4
    assert ds.training_examples(db, "d") == (["one", "two", "hello"], ["a", "b", "a"], 0)
    assert ds.feedback_examples(db, "other") == ([], [])  # feedback on a task without that head's row
