"""``embedclf bench``: smoke tests of each mode on a tiny file with the fake embedder.

Only that the figures exist and are sane: these are not timed tests.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest
import redis

from embedclf.bench.raw import with_option
from embedclf.demo import TRAIN_CSV
from tests.bench.benchdb import bench_databases, check_machine, positive, run
from tests.conftest import REDIS_SERVER, one_line_error


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    """The first 80 demo rows (6 labels)."""
    with open(TRAIN_CSV, newline="") as f:
        rows = list(csv.DictReader(f))[:80]
    path = tmp_path / "tiny.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows(rows)
    return path


def test_embed_smoke(tiny):
    r = json.loads(run("embed", "--data", str(tiny), "-n", "50", "--batch-sizes", "8,32", "--json").stdout)
    assert r["n"] == 50 and r["embedder"] == "fake:64"
    assert [x["batch_size"] for x in r["runs"]] == [8, 32]
    for x in r["runs"]:
        assert positive(x["texts_per_s"]) and positive(x["tokens_per_s"]) and x["n"] == 50
    assert r["best"]["texts_per_s"] == max(x["texts_per_s"] for x in r["runs"])
    check_machine(r["machine"], "fake:64")
    out = run("embed", "--data", str(tiny), "-n", "20", "--batch-sizes", "4").output
    assert "machine:" in out and "best: batch size 4" in out


def test_embed_compares_several_specs_interleaved(tiny):
    r = json.loads(run("embed", "--data", str(tiny), "-n", "40", "--batch-sizes", "8,16", "--rounds", "2",
                       "--embedder", "fake:64", "--embedder", "fake:32?delay_ms=5", "--json").stdout)
    assert [e["embedder_spec"] for e in r["embedders"]] == ["fake:64", "fake:32?delay_ms=5"]
    assert [e["embedder"] for e in r["embedders"]] == ["fake:64", "fake:32"]
    assert r["embedder"] == "fake:64" and r["runs"] == r["embedders"][0]["runs"]  # the one-spec fields: the first
    first_best = r["embedders"][0]["best"]["texts_per_s"]
    for e in r["embedders"]:
        assert e["processes"] == 1 and [x["batch_size"] for x in e["runs"]] == [8, 16]
        for x in e["runs"]:
            assert len(x["round_seconds"]) == 2 and x["seconds"] == pytest.approx(sum(x["round_seconds"]) / 2, abs=1e-4)
            assert positive(x["texts_per_s"]) and x["n"] == 40
        assert e["ratio_to_first"]["best"] == pytest.approx(e["best"]["texts_per_s"] / first_best, rel=0.01)
    assert r["embedders"][0]["ratio_to_first"] == {"best": 1.0, "per_batch": {"8": 1.0, "16": 1.0}}
    check_machine(r["machine"], "fake:64, fake:32")
    out = run("embed", "--data", str(tiny), "-n", "20", "--batch-sizes", "4", "--embedder", "fake:64",
              "--embedder", "fake:16").output
    assert "x first" in out and "fake:16: model id fake:16" in out


def test_embed_processes(tiny):
    r = json.loads(run("embed", "--data", str(tiny), "-n", "30", "--batch-sizes", "10", "--processes", "1,2",
                       "--embedder", "fake:64", "--json").stdout)
    one, two = r["embedders"]
    assert (one["processes"], two["processes"]) == (1, 2) and r["processes"] == [1, 2]
    assert one["runs"][0]["n"] == 30 and two["runs"][0]["n"] == 60  # every process embeds all N texts
    assert two["tokens"] == 2 * one["tokens"] and positive(two["best"]["texts_per_s"])
    out = run("embed", "--data", str(tiny), "-n", "10", "--batch-sizes", "5", "--processes", "2",
              "--embedder", "fake:8").output
    assert "fake:8 x2" in out
    # a child that cannot load its embedder: one error line naming the spec and the reason, no hang
    one_line_error(run("embed", "--data", str(tiny), "--processes", "2", "--embedder", "fake:8?delay_ms=x",
                       "--json", ok=False), "fake:8?delay_ms=x", "delay_ms must be an integer")


def test_compare_interleaves_and_takes_the_median():
    from embedclf.bench.raw import RawRun, compare, ratios

    calls: list[tuple[str, int]] = []
    secs = {"a": iter([1.0, 3.0, 2.0, 1.0, 1.0, 1.0]), "b": iter([4.0, 4.0, 8.0, 4.0, 4.0, 2.0])}

    def measurer(name):
        def m(bs, label):
            calls.append((name, bs))
            return RawRun(bs, 100, next(secs[name]))
        return m

    res = compare([measurer("a"), measurer("b")], ["a", "b"], [8, 16], rounds=3)
    assert calls == [("a", 8), ("b", 8), ("a", 16), ("b", 16)] * 3  # round by round, spec by spec
    assert [r.seconds for r in res[0]] == [1.0, 1.0] and [r.seconds for r in res[1]] == [4.0, 4.0]
    assert res[0][0].round_seconds == (1.0, 2.0, 1.0)
    assert ratios(res)[1] == {"best": 0.25, "per_batch": {"8": 0.25, "16": 0.25}}


def test_train_smoke(tiny):
    r = json.loads(run("train", "--data", str(tiny), "--epochs", "3", "--json").stdout)
    assert r["n"] == 80 and r["n_labels"] == 6 and r["epochs_max"] == 3 and 1 <= r["epochs_run"] <= 3
    for key in ("embed_seconds", "embed_texts_per_s", "train_seconds", "seconds_per_epoch"):
        assert positive(r[key]), key
    check_machine(r["machine"], "fake:64")
    assert "s/epoch" in run("train", "--data", str(tiny), "--epochs", "2").output


def test_heads_cross_validation_smoke(tiny):
    r = json.loads(run("heads", "--data", str(tiny), "--folds", "3", "--epochs", "3", "--json").stdout)
    assert r["mode"] == "heads" and r["n"] == 80 and r["n_labels"] == 6 and r["folds"] == 3
    assert set(r["variants"]) == {"mlp", "mlp+linear", "linear"} and r["reference"] == "mlp"
    for v in r["variants"].values():
        assert len(v["fold_accuracy"]) == 3 and all(0.0 <= a <= 1.0 for a in v["fold_accuracy"])
        assert positive(v["train_seconds_per_fold"])
    check_machine(r["machine"], "fake:64")
    out = run("heads", "--data", str(tiny), "--folds", "2", "--epochs", "2", "--variants", "linear,mlp+linear").output
    assert "3-fold" not in out and "2-fold stratified cross-validation" in out and "vs linear" in out
    one_line_error(run("heads", "--data", str(tiny), "--variants", "mlp,bogus", ok=False), "unknown head variant")
    one_line_error(run("heads", "--data", str(tiny), "--folds", "20", ok=False), "at least 20")


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(120)
def test_e2e_smoke(engine):
    before = bench_databases()
    # all 300 demo rows: 60 texts of the fake embedder are ≈ 10 ms of the batch thread's CPU a round, which
    # read 0 once in CI when per-thread CPU came from /proc's sampled 10 ms ticks (now the scheduler's run
    # time where the kernel has it, tests/bench/test_procs.py; the ticks remain the fallback)
    r = json.loads(run("e2e", "--data", str(TRAIN_CSV), "-n", "300", "--workers", "1", "--batch-size", "16",
                       "--max-wait-ms", "20", "--rounds", "2", "--worker-env", "EMBEDCLF_TEXT_THREAD=false",
                       "--json").stdout)
    # --worker-env reached the worker: it started no text thread (its TF-IDF work ran on the batch thread)
    assert r["worker_env"] == {"EMBEDCLF_TEXT_THREAD": "false"} and "ec-text_0" not in r["worker_cpu_s"]
    # two rounds on the same workers: each round's figures come from its own 300 rows
    assert r["n"] == 300 and r["rows"] == 300 and r["workers"] == 1 and r["error_rows"] == 0
    assert r["rounds"] == 2 and len(r["round_figures"]) == 2 and r["median_round"] in (1, 2)
    assert all(positive(f["ratio"]) and positive(f["raw_texts_per_s"]) for f in r["round_figures"])
    # each e2e pass is compared with the mean time of the raw passes just before and after it; round 2's
    # "before" pass is round 1's "after" pass
    for f in r["round_figures"]:
        mean_s = (300 / f["raw_before_texts_per_s"] + 300 / f["raw_after_texts_per_s"]) / 2
        assert f["raw_texts_per_s"] == pytest.approx(300 / mean_s, rel=2e-3)
    assert r["round_figures"][0]["raw_after_texts_per_s"] == r["round_figures"][1]["raw_before_texts_per_s"]
    assert r["ratio"] == min(f["ratio"] for f in r["round_figures"])  # the lower of two is the median
    # and the mean of every round's ratio with its 95 % interval (Student's t over the rounds)
    ratios = [f["ratio"] for f in r["round_figures"]]
    assert r["ratio_mean"] == pytest.approx(sum(ratios) / 2, abs=1e-4)
    lo, hi = r["ratio_ci95"]
    assert lo <= min(ratios) <= max(ratios) <= hi  # with two values t(0.975, 1) = 12.7 spans both
    # the worker's threads, by OS name: its batch thread did the embedding
    assert r["worker_cpu_s"].get("ec-batch", 0) > 0
    assert r["embedder"] == "fake:64"
    # from the worker's metrics: the batch thread's busy time fits in the round, and gives the model's speed there
    for f in r["round_figures"]:
        assert 0 < f["model_busy"] <= 1 and positive(f["inference_texts_per_s"])
        assert f["inference_texts_per_s"] >= f["e2e_texts_per_s"] * 0.999
    assert 0 < r["worker_inference_s"] <= r["e2e_seconds"] and r["worker_write_s"] > 0
    # where the test's Postgres runs on this host (its processes readable here): its backends' CPU for each
    # round's rows (the workers' writes at least); a server in a container gives no figure
    from embedclf.bench.procs import server_cpu_s

    for f in r["round_figures"]:
        if server_cpu_s(engine) is None:
            assert f["postgres_cpu_s"] is None and f["postgres_us_per_row"] is None
        else:
            assert positive(f["postgres_cpu_s"]) and f["postgres_us_per_row"] == pytest.approx(
                1e6 * f["postgres_cpu_s"] / 300, abs=0.3)
    # the default head (with the TF-IDF member, as heads train makes it), its cost timed per text
    assert r["head"] == "default" and positive(r["head_us_per_text"]) and positive(r["head_speedup_2_threads"])
    assert r["head_vs_embed"] == pytest.approx(r["head_us_per_text"] * r["raw_texts_per_s"] / 1e6, abs=1e-3)
    for key in ("e2e_texts_per_s", "raw_texts_per_s", "ratio", "enqueue_texts_per_s", "worker_rss_mb"):
        assert positive(r[key]), key
    assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"] <= r["latency_max_ms"]
    bs = r["batch_sizes"]
    assert 1 <= bs["min"] <= bs["mean"] <= bs["max"] <= 16
    assert sum(b["batches"] for b in bs["histogram"]) == bs["batches"] and bs["batches"] >= 300 / 16
    check_machine(r["machine"], "fake:64")
    # the temporary database is gone, no other one was left behind, the Redis DB is flushed
    assert r["database"].startswith(f"embedclf_bench_{os.getpid()}_")  # this process made it
    after = bench_databases()
    assert r["database"] not in after and after <= before
    assert redis.Redis.from_url(f"{REDIS_SERVER}/{r['redis_db']}").dbsize() == 0


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(120)
def test_e2e_with_a_device_stand_in_and_every_head_member(tiny):
    """``null:64?us_per_text=500`` stands in for a device of 2,000 texts/s: neither the raw pass nor the worker's
    model goes faster than that. ``--head full`` serves every member, the kNN one although the validation split
    of the null embedder's vectors would drop it (``default`` would)."""
    r = json.loads(run("e2e", "--data", str(tiny), "-n", "80", "--batch-size", "16", "--max-wait-ms", "20",
                       "--rounds", "1", "--embedder", "null:64?us_per_text=500", "--head", "full", "--json").stdout)
    assert r["rows"] == 80 and r["error_rows"] == 0 and r["embedder"] == "null:64"
    assert r["head"] == "full" and r["head_members"] == ["mlp", "linear", "tfidf", "knn"]
    assert positive(r["head_us_per_text"])
    f = r["round_figures"][0]
    for key in ("raw_before_texts_per_s", "raw_after_texts_per_s", "inference_texts_per_s"):
        assert 0 < f[key] <= 2000, key  # the sleep is a floor on every pass's time
    assert 0 < r["e2e_texts_per_s"] <= 2000


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.timeout(120)
def test_e2e_paced_low_load(tiny, tmp_path):
    """--rate sends one task at a time: the enqueue pace is the rate and batches stay small."""
    # sorted by label, like BANKING77's train.csv: the first 20 rows hold one label, yet the
    # throw-away head is trained on rows spread over the whole file
    with open(tiny, newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda row: row["label"])
    by_label = tmp_path / "by_label.csv"
    with by_label.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows(rows)
    n = sum(row["label"] == rows[0]["label"] for row in rows)  # the first n rows: one label only
    assert n >= 8
    r = json.loads(run("e2e", "--data", str(by_label), "-n", str(n), "--rate", "10", "--batch-size", "16",
                       "--max-wait-ms", "20", "--rounds", "1", "--head", "dense", "--json").stdout)
    assert r["rows"] == n and r["error_rows"] == 0 and r["rate"] == 10 and r["head"] == "dense"
    # n tasks at 10/s take (n - 1) / 10 s to send (the first at t=0), whatever the machine
    assert (n - 1) / 10 - 0.05 <= r["enqueue_seconds"] < (n - 1) / 10 + 4
    assert r["e2e_texts_per_s"] <= 11
    # at 100 ms apart, a 20 ms max wait cuts nearly every batch at one task
    assert r["batch_sizes"]["mean"] < 2
    assert 20 <= r["p50_ms"] <= r["p95_ms"]  # at least the max wait, nothing lost in between


@pytest.mark.postgres
@pytest.mark.redis
def test_bad_inputs(tiny, tmp_path):
    before = bench_databases()
    one_line_error(run("embed", "--data", str(tiny), "--text-col", "body", ok=False), "no column 'body'")
    one_line_error(run("train", "--data", str(tiny), "--label-col", "category", ok=False), "no column 'category'")
    one_line_error(run("e2e", "--data", str(tiny), "--label-col", "category", "-n", "10", ok=False),
                   "no column 'category'")
    one_line_error(run("embed", "--data", str(tmp_path / "none.csv"), ok=False), "no such file")
    one_line_error(run("e2e", "--data", str(tiny), "-n", "10", "--worker-env", "EMBEDCLF_NOPE=1", ok=False),
                   "not EMBEDCLF_NAME=VALUE for a known setting")
    one_line_error(run("e2e", "--data", str(tiny), "-n", "10", "--worker-env", "EMBEDCLF_DATABASE_URL=x", ok=False),
                   "set by the benchmark itself")
    one_line_error(run("e2e", "--data", str(tiny), "-n", "10", "--worker-env", "EMBEDCLF_HEAD_OVERLAP=maybe",
                       ok=False), "not a boolean")
    one_line_error(run("embed", "--data", str(tiny), "--n-batch", "512", ok=False), "llama.cpp specs only")
    one_line_error(run("embed", "--data", str(tiny), "--n-batch", "512", "--embedder", "gemma3-270m", "--embedder",
                       "gemma3-270m", ok=False), "one at a time")
    one_line_error(run("embed", "--data", str(tiny), "--n-batch", "512", "--embedder", "gemma3-270m", "--rounds", "2",
                       ok=False), "cannot be combined")
    one_line_error(run("embed", "--data", str(tiny), "--embedder", "bogus:1", ok=False), "unknown embedder spec")
    one_line_error(run("e2e", "--data", str(tiny), "-n", "10", ok=False,
                       env={"EMBEDCLF_DATABASE_URL": "postgresql+psycopg2://postgres@127.0.0.1:1/x"}),
                   "cannot reach Postgres")
    one_line_error(run("e2e", "--data", str(tiny), "-n", "10", ok=False,
                       env={"EMBEDCLF_BROKER_URL": "redis://127.0.0.1:1/0"}), "cannot reach Redis")
    assert bench_databases() <= before


def test_spec_helpers():
    assert with_option("gemma3-270m", "n_batch", 2048) == "gemma3-270m?n_batch=2048"
    assert with_option("gemma3-270m?pooling=last", "n_batch", 512) == "gemma3-270m?pooling=last&n_batch=512"


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_the_head_is_timed_on_every_batch_once_a_pass_whatever_the_threads(threads):
    """``head_cost_us`` with ``threads``: the threads share the batches, each batch once per pass (3 passes), each
    thread with one torch thread."""
    import threading

    import numpy as np
    import torch

    from embedclf.bench.e2e import head_cost_us

    seen, names, lock = [], set(), threading.Lock()

    class Recording:
        def predict_proba(self, x, texts):
            with lock:
                seen.append(tuple(texts))
                names.add((threading.current_thread().name, torch.get_num_threads()))
            return np.zeros((len(x), 2), dtype=np.float32)

    texts = [f"t{i}" for i in range(10)]
    us = head_cost_us(Recording(), np.zeros((10, 4), dtype=np.float32), texts, 4, threads=threads)
    assert us > 0
    batches = [tuple(texts[i:i + 4]) for i in (0, 4, 8)]
    assert sorted(seen) == sorted(batches * 3)
    assert {n for _, n in names} == {1} and 1 <= len(names) <= threads
