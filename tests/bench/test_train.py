"""``bench train --cache``: a cold first run embeds and stores, the retrain reads everything from Postgres."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from embedclf.cli import cli
from embedclf.data import load_labeled
from embedclf.demo import TRAIN_CSV

pytestmark = pytest.mark.postgres


def test_bench_train_cache_second_run_embeds_nothing(settings):
    env = {"EMBEDCLF_DATABASE_URL": settings.database_url, "EMBEDCLF_EMBEDDER": "fake:64"}
    r = CliRunner().invoke(cli, ["bench", "train", "--data", str(TRAIN_CSV), "--cache", "--epochs", "3", "--json"],
                           env=env, catch_exceptions=False)
    assert r.exit_code == 0, r.output + r.stderr
    report = json.loads(r.stdout)
    n = len(set(load_labeled(TRAIN_CSV).texts))
    assert report["mode"] == "train-cache" and report["n"] == n
    assert (report["first"]["embedded"], report["first"]["cached"]) == (n, 0)
    assert (report["second"]["embedded"], report["second"]["cached"]) == (0, n)
    # same vectors, same seed: the retrain reproduces the first head
    assert report["second"]["val_accuracy"] == report["first"]["val_accuracy"]
    assert report["retrain_seconds"] == report["second"]["total_seconds"] > 0
