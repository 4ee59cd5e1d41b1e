"""The admin CLI through click's CliRunner: each command, and a bad-input case each."""

from __future__ import annotations

import base64
import csv
import json
import os
import secrets

import pytest
import redis

from embedclf.demo import HOLDOUT_CSV, TRAIN_CSV
from embedclf.store import repository as repo
from embedclf.store.db import drop_database
from tests.conftest import one_line_error

pytestmark = pytest.mark.postgres
PG_SERVER = os.environ.get("EMBEDCLF_TEST_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")




def test_db_upgrade_current_downgrade_on_fresh_database(run):
    url = f"{PG_SERVER}/embedclf_cli_{secrets.token_hex(3)}"
    try:
        r = run("db", "upgrade", "--create", env={"EMBEDCLF_DATABASE_URL": url})
        assert "created database" in r.output and "revision 0004" in r.output
        assert run("db", "current", env={"EMBEDCLF_DATABASE_URL": url}).output.strip() == "0004"
        assert "base" in run("db", "downgrade", "base", env={"EMBEDCLF_DATABASE_URL": url}).output
    finally:
        drop_database(url)


def test_db_unreachable_says_how_to_start_it(run):
    r = run("db", "upgrade", env={"EMBEDCLF_DATABASE_URL": "postgresql+psycopg2://postgres@127.0.0.1:1/x"}, ok=False)
    one_line_error(r, "cannot reach Postgres", "pg_ctlcluster", "docker compose")


def test_worker_processes_bad_values_fail_in_one_line(run):
    r = run("worker", "--processes", "0", ok=False)
    assert r.exit_code == 2 and "--processes" in r.output
    r = run("worker", "--processes", "3", env={"EMBEDCLF_METRICS_PORT": "65534"}, ok=False)
    one_line_error(r, "EMBEDCLF_METRICS_PORT 65534 + 3 processes passes 65535")


def test_heads_train_list_show_activate_rollback(run, clean_db):
    r = run("heads", "train", "--name", "support", "--data", str(TRAIN_CSV), "--epochs", "20")
    assert "tf-idf baseline" in r.output and "stored head 'support' version 1 (active)" in r.output
    assert "mlp val" in r.output and "linear val" in r.output and "averaged: val" in r.output
    assert "tfidf val" in r.output  # the default head is the hybrid: MLP + linear + TF-IDF member
    assert "kNN member" in r.output and "(--knn-member auto): validation NLL" in r.output
    r = run("heads", "train", "--name", "support", "--data", str(TRAIN_CSV), "--epochs", "5", "--json",
            "--no-linear-member", "--no-tfidf-member", "--knn-member", "off")
    report = json.loads(r.stdout)
    assert report["version"] == 2 and report["embedder"] == "fake:64"
    assert set(report["members"]) == {"mlp"}
    for key in ("accuracy", "macro_f1", "map3", "top3_accuracy", "baseline_tfidf_accuracy"):
        assert 0.0 <= report[key] <= 1.0
    assert report["n_train"] + report["n_test"] == 300
    listed = json.loads(run("heads", "list", "--json").stdout)
    assert [(h["version"], h["active"]) for h in listed] == [(1, False), (2, True)]
    shown = json.loads(run("heads", "show", "support", "1").stdout)
    assert shown["version"] == 1 and len(shown["labels"]) == 6 and shown["config"]["num_layers"] == 3
    # the default head has two members, stored in its config; --no-linear-member gave v2 one
    assert shown["config"]["linear_member"] is True and shown["config"]["tfidf"]["parts"][0]["name"] == "word"
    v2 = json.loads(run("heads", "show", "support", "2").stdout)["config"]
    assert v2["linear_member"] is False and v2["tfidf"] is None
    assert "version 1 is active" in run("heads", "activate", "support", "1").output
    assert "rolled back to version 2" in run("heads", "rollback", "support").output
    assert repo.active_versions(clean_db) == {"support": 2}
    one_line_error(run("heads", "delete", "support", "2", ok=False), "is active")
    assert "deleted head 'support' version 1" in run("heads", "delete", "support", "1").output
    table = run("heads", "list").output
    assert "support" in table and "fake:64" in table


def test_heads_train_bad_inputs(run, clean_db, tmp_path):
    one_line_error(run("heads", "train", "--name", "x", "--data", str(tmp_path / "none.csv"), ok=False),
                   "no such file")
    one_line_error(run("heads", "train", "--name", "x", "--data", str(TRAIN_CSV), "--label-col", "category",
                       ok=False), "no column 'category'", "text, label")
    one_line_error(run("heads", "train", "--name", "x", "--data", str(TRAIN_CSV), "--embedder", "bogus:1",
                       ok=False), "unknown embedder spec")
    one_label = tmp_path / "one.csv"
    one_label.write_text("text,label\nhello,a\nworld,a\n")
    one_line_error(run("heads", "train", "--name", "x", "--data", str(one_label), ok=False), "at least 2")
    one_line_error(run("heads", "show", "ghost", ok=False), "head 'ghost'")
    one_line_error(run("heads", "activate", "ghost", "3", ok=False), "head 'ghost' does not exist")
    assert repo.list_heads(clean_db) == []


def test_train_with_custom_columns_and_plots(run, clean_db, tmp_path):
    data = tmp_path / "intents.jsonl"
    with open(TRAIN_CSV) as f:
        rows = list(csv.DictReader(f))
    data.write_text("\n".join(json.dumps({"utterance": r["text"], "intent": r["label"]}) for r in rows))
    r = run("heads", "train", "--name", "intents", "--data", str(data), "--text-col", "utterance",
            "--label-col", "intent", "--epochs", "5", "--plots", str(tmp_path / "plots"))
    pngs = sorted(p.name for p in (tmp_path / "plots").iterdir() if p.suffix == ".png")
    assert pngs == ["intents-v1-confusion.png", "intents-v1-reliability.png", "intents-v1-training.png"]
    assert (tmp_path / "plots" / "intents-v1-report.json").exists()
    assert (tmp_path / "plots" / "intents-v1-report.md").exists()
    assert all((tmp_path / "plots" / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    assert "stored head 'intents'" in r.output


def test_evaluate_json(run, tmp_path):
    r = run("evaluate", "--train", str(TRAIN_CSV), "--test", str(HOLDOUT_CSV), "--epochs", "10", "--json")
    report = json.loads(r.stdout)
    for key in ("accuracy", "macro_f1", "map3", "top3_accuracy", "baseline_tfidf_accuracy", "n_train", "n_test",
                "embedder", "embed_seconds", "train_seconds"):
        assert key in report
    assert (report["n_train"], report["n_test"], report["embedder"]) == (300, 90, "fake:64")
    bad = tmp_path / "bad.csv"
    bad.write_text("text,label\nsomething,never_seen\n")
    one_line_error(run("evaluate", "--train", str(TRAIN_CSV), "--test", str(bad), ok=False),
                   "never appear in training", "never_seen")


@pytest.mark.slow
def test_evaluate_with_the_default_embedder(run):
    r = run("evaluate", "--train", str(TRAIN_CSV), "--test", str(HOLDOUT_CSV), "--json",
            env={"EMBEDCLF_EMBEDDER": "minilm"})
    report = json.loads(r.stdout)
    assert report["embedder"] == "st:all-MiniLM-L6-v2"
    assert report["accuracy"] >= 0.85  # measured 0.9+; TF-IDF on 300 texts is far lower
    assert report["accuracy"] > report["baseline_tfidf_accuracy"]


def test_enqueue_and_results(run, settings, clean_db, tmp_path):
    r_client = redis.Redis.from_url(settings.broker_url)
    r_client.delete(settings.queue)
    data = tmp_path / "texts.csv"
    data.write_text("id,body\nr1,where is my parcel\nr2,refund please\nr3,\n")
    ids_out = tmp_path / "ids.txt"
    r = run("enqueue", "--head", "support", "--file", str(data), "--text-col", "body", "--request-id-col", "id",
            "--ids-out", str(ids_out))
    assert "enqueued 3 texts in 1 tasks" in r.output
    assert r_client.llen(settings.queue) == 1  # one multi-text task
    [message] = [json.loads(m) for m in r_client.lrange(settings.queue, 0, -1)]
    assert message["headers"]["task"] == "embedclf.classify"
    kwargs = json.loads(base64.b64decode(message["body"]))[1]
    assert kwargs["texts"] == ["where is my parcel", "refund please", ""]
    assert kwargs["request_ids"] == ["r1", "r2", "r3"] and kwargs["head"] == "support"
    tid = message["headers"]["id"]
    assert ids_out.read_text().splitlines() == [f"{tid}\t0", f"{tid}\t1", f"{tid}\t2"]
    r_client.delete(settings.queue)
    run("enqueue", "--head", "support", "--file", str(data), "--text-col", "body", "--per-task", "1", "--quiet")
    assert r_client.llen(settings.queue) == 3  # one task per text
    r_client.delete(settings.queue)

    repo.write_predictions(clean_db, [
        {"task_id": "t1", "status": "ok", "label": "shipping", "score": 0.8, "head_name": "support",
         "head_version": 1, "text": "where is my parcel",
         "top3": [{"label": "shipping", "score": 0.8}, {"label": "returns", "score": 0.1},
                  {"label": "billing", "score": 0.05}]},
        {"task_id": "t2", "status": "error", "error": "'text' is empty", "head_name": "support"},
    ])
    lines = run("results", "--head", "support", "--format", "json").output.strip().splitlines()
    assert {json.loads(line)["task_id"] for line in lines} == {"t1", "t2"}
    out = run("results", "--head", "support", "--format", "csv").output
    parsed = list(csv.DictReader(out.splitlines()))
    assert {p["task_id"] for p in parsed} == {"t1", "t2"}
    table = run("results", "--status", "error").output
    assert "'text' is empty" in table and "shipping" not in table
    assert "no results" in run("results", "--head", "nobody").output
    assert run("results", "--format", "xml", ok=False).exit_code == 2


def test_enqueue_bad_inputs(run, tmp_path):
    data = tmp_path / "texts.csv"
    data.write_text("text\nhello\n")
    one_line_error(run("enqueue", "--head", "h", "--file", str(data),
                       env={"EMBEDCLF_BROKER_URL": "redis://127.0.0.1:1/0", "EMBEDCLF_ENQUEUE_RETRY_S": "1"},
                       ok=False),
                   "cannot reach the broker", "redis-server")
    one_line_error(run("enqueue", "--head", "h", "--file", str(data), "--text-col", "body", ok=False),
                   "no column 'body'")
    one_line_error(run("enqueue", "--head", "h", "--file", str(tmp_path / "missing.csv"), ok=False), "no such file")


def test_bad_settings_are_reported(run):
    one_line_error(run("heads", "list", env={"EMBEDCLF_BATCH_MAX_SIZE": "lots"}, ok=False),
                   "EMBEDCLF_BATCH_MAX_SIZE")


def test_h_is_help_everywhere(run):
    for args in (["-h"], ["db", "-h"], ["db", "upgrade", "-h"], ["heads", "-h"], ["enqueue", "-h"], ["bench", "queue",
                                                                                                     "-h"],
                 ["services", "-h"], ["config", "-h"]):
        r = run(*args)
        assert r.exit_code == 0 and "Usage:" in r.output, args


def test_config_prints_the_settings_in_effect_with_secrets_masked(run):
    env = {"EMBEDCLF_BROKER_URL": "redis://:hunter22@h:1/0", "EMBEDCLF_RESULT_BACKEND": "redis://:backendpw@h:1/1",
           "EMBEDCLF_BATCH_MAX_SIZE": "96"}
    out = run("config", env=env).output
    assert "EMBEDCLF_BATCH_MAX_SIZE  96  (environment)" in out.replace("   ", "  ") or "96  (environment)" in out
    assert "EMBEDCLF_QUEUE" in out and "(default)" in out
    assert "hunter22" not in out and "backendpw" not in out
    data = json.loads(run("config", "--json", env=env).output)
    assert data["EMBEDCLF_BATCH_MAX_SIZE"] == 96 and data["EMBEDCLF_BROKER_URL"] == "redis://:***@h:1/0"


def test_bad_urls_are_one_line_errors_naming_the_variable(run):
    for var, value, fragment in [("EMBEDCLF_DATABASE_URL", "mysql://u:pw@h/db", "EMBEDCLF_DATABASE_URL must be"),
                                 ("EMBEDCLF_BROKER_URL", "http://h:80/", "EMBEDCLF_BROKER_URL must be")]:
        one_line_error(run("results", env={var: value}, ok=False), fragment)


def test_missing_database_and_missing_schema_say_what_to_run(run, pg_url):
    from embedclf.store.db import create_database, drop_database

    missing = pg_url + "_nosuchdb"
    one_line_error(run("results", env={"EMBEDCLF_DATABASE_URL": missing}, ok=False),
                   "does not exist", "embedclf db upgrade --create")
    empty = pg_url + "_empty"
    create_database(empty)
    try:
        one_line_error(run("results", env={"EMBEDCLF_DATABASE_URL": empty}, ok=False),
                       "no embedclf schema", "embedclf db upgrade")
    finally:
        drop_database(empty)


def test_enqueue_checks_heads_and_has_timeout_and_json(run, settings, clean_db, tmp_path):
    from tests.helpers import tiny_head

    tiny_head(clean_db, "known")
    r_client = redis.Redis.from_url(settings.broker_url)
    r_client.delete(settings.queue)
    data = tmp_path / "texts.txt"
    data.write_text("one\ntwo\n")
    r = run("enqueue", "--head", "nosuch", "--file", str(data), "--quiet")
    assert "warning: no active head 'nosuch' (active heads: known)" in r.stderr and r_client.llen(settings.queue) == 1
    one_line_error(run("enqueue", "--head", "nosuch", "--file", str(data), "--strict", ok=False),
                   "no active head 'nosuch'", "nothing was enqueued")
    assert r_client.llen(settings.queue) == 1
    out = json.loads(run("enqueue", "--head", "known", "--file", str(data), "--json").stdout)
    assert out == {"texts": 2, "tasks": 1, "heads": ["known"], "queue": settings.queue, "ids_out": None}
    r_client.delete(settings.queue)
    t0 = __import__("time").monotonic()
    one_line_error(run("enqueue", "--head", "known", "--file", str(data), "--timeout", "1",
                       env={"EMBEDCLF_BROKER_URL": "redis://127.0.0.1:1/0"}, ok=False), "cannot reach the broker")
    assert __import__("time").monotonic() - t0 < 10


def test_results_filters_and_json(run, clean_db):
    repo.write_predictions(clean_db, [
        {"task_id": "f1", "item": 0, "status": "ok", "label": "shipping", "score": 0.8, "head_name": "support",
         "top3": [{"label": "shipping", "score": 0.8}]},
        {"task_id": "f2", "item": 3, "status": "ok", "label": "billing", "score": 0.7, "head_name": "support",
         "top3": [{"label": "billing", "score": 0.7}]},
    ])
    rows = [json.loads(line) for line in run("results", "--json", "--label", "billing").output.splitlines()]
    assert [(r["task_id"], r["item"]) for r in rows] == [("f2", 3)]
    assert "T" in rows[0]["completed_at"]  # ISO 8601
    assert [json.loads(x)["task_id"] for x in run("results", "--json", "--task-id", "f1").output.splitlines()] == ["f1"]
    assert run("results", "--since", "1h", "--json").output.count("\n") == 2
    assert run("results", "--since", "2999-01-01", "--json").output.strip() == ""
    table = run("results").output
    assert "f2:3" in table and "task_id:item" in table


def test_heads_train_with_a_knn_member_stores_and_reports_it(run, clean_db):
    r = run("heads", "train", "--name", "near", "--data", str(TRAIN_CSV), "--epochs", "5", "--json",
            "--knn-member", "on")
    report = json.loads(r.stdout)
    assert report["knn_member"] == {"mode": "on", "kept": True}
    assert set(report["members"]) == {"mlp", "linear", "tfidf", "knn"} and report["members"]["knn"]["weight"] == 0.3
    config = json.loads(run("heads", "show", "near", "1").stdout)["config"]
    assert config["knn"]["kind"] == "knn-vote" and config["knn"]["n_vectors"] == report["n_train"]
    auto = json.loads(run("heads", "train", "--name", "near", "--data", str(TRAIN_CSV), "--epochs", "5",
                          "--json").stdout)["knn_member"]
    assert auto["mode"] == "auto" and auto["kept"] is (auto["val_nll_with"] < auto["val_nll_without"])
    r = run("heads", "train", "--name", "near", "--data", str(TRAIN_CSV), "--knn-member", "maybe", ok=False)
    assert r.exit_code == 2 and "maybe" in r.stderr
