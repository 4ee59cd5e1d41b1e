"""``embedclf evaluate --data``: the CLINC150 layout, with the threshold chosen on val + oos_val (real MiniLM)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from embedclf.cli import cli
from embedclf.cli.evaluate import load_clinc
from embedclf.data import DataError
from tests.conftest import one_line_error

CLINC = Path("/work/shared/datasets/clinc150/data_full.json")
INTENTS = ("translate", "transfer", "timer", "definition", "meaning_of_life", "insurance_change")


@pytest.fixture(scope="module")
def small_clinc(tmp_path_factory) -> Path:
    """Six real CLINC150 intents and real out-of-scope texts, same layout as data_full.json."""
    if not CLINC.is_file():
        pytest.skip("CLINC150 not available")
    full = json.loads(CLINC.read_text())
    sizes = {"train": 25, "val": 6, "test": 12, "oos_train": 30, "oos_val": 20, "oos_test": 40}
    small = {}
    for split, n in sizes.items():
        rows = full[split]
        if split.startswith("oos"):
            small[split] = rows[:n]
        else:
            small[split] = [r for i in INTENTS for r in [x for x in rows if x[1] == i][:n]]
    path = tmp_path_factory.mktemp("clinc") / "small.json"
    path.write_text(json.dumps(small))
    return path


def run(*args: str):
    env = {"EMBEDCLF_EMBEDDER": "minilm", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_load_clinc_reads_the_six_splits(small_clinc):
    d = load_clinc(small_clinc)
    assert set(d) == {"train", "val", "test", "oos_train", "oos_val", "oos_test"}
    assert len(d["train"][0]) == 25 * len(INTENTS) and set(d["train"][1]) == set(INTENTS)
    assert set(d["oos_test"][1]) == {"oos"} and len(d["oos_test"][0]) == 40


def test_evaluate_clinc_layout_reports_in_scope_accuracy_and_oos_recall(small_clinc):
    r = run("evaluate", "--data", str(small_clinc), "--epochs", "30", "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["n_in_scope"] == 12 * len(INTENTS) and s["n_oos"] == 40
    # abstaining counts as wrong, so in-scope accuracy never exceeds plain accuracy
    assert s["in_scope_accuracy"] <= s["accuracy"] + 1e-9
    assert s["in_scope_accuracy"] > 0.8  # six well separated intents
    assert s["oos_recall"] > 0.5  # real out-of-scope requests are mostly caught
    assert "OOS recall" in s["abstain_criterion"] and 0 <= s["abstain_threshold"] <= 1
    assert s["n_labels"] == len(INTENTS) + 1  # the out-of-scope training texts are a class by default
    assert "losing <= 0.005 in-scope" in s["abstain_criterion"]  # the default budget: half a point
    # a bigger budget on the same (deterministically trained) head catches at least as many OOS texts
    wide = json.loads(run("evaluate", "--data", str(small_clinc), "--epochs", "30", "--json",
                          "--max-in-scope-loss", "0.05").stdout)
    assert "losing <= 0.05 in-scope" in wide["abstain_criterion"]
    assert wide["accuracy"] == s["accuracy"] and wide["oos_recall"] >= s["oos_recall"]
    assert wide["abstain_threshold"] >= s["abstain_threshold"]
    # the default OOS score (kNN discount); --oos-beta 0 is the previous rule, on the top probability alone
    assert s["abstain_oos_score"] == "knn-cosine k 10 beta 3"
    plain = json.loads(run("evaluate", "--data", str(small_clinc), "--epochs", "30", "--json",
                           "--oos-beta", "0").stdout)
    assert plain["abstain_oos_score"] == "top probability" and plain["accuracy"] == s["accuracy"]


def test_evaluate_clinc_bad_inputs(tmp_path, small_clinc):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"train": [["hi", "greet"]]}))
    one_line_error(run("evaluate", "--data", str(bad)), "missing split", "oos_val")
    bad.write_text(json.dumps({s: [["only text"]] for s in ("train", "val", "test", "oos_train", "oos_val",
                                                            "oos_test")}))
    one_line_error(run("evaluate", "--data", str(bad)), "[text, label] pairs")
    with pytest.raises(DataError, match="no such file"):
        load_clinc(tmp_path / "nope.json")
    r = run("evaluate", "--data", str(small_clinc), "--train", str(small_clinc))
    assert r.exit_code != 0 and "not both" in r.output
    r = run("evaluate", "--train", str(small_clinc), "--test", str(small_clinc), "--max-in-scope-loss", "0.01")
    assert r.exit_code != 0 and "needs out-of-scope validation texts" in r.output
    r = run("evaluate", "--train", str(small_clinc), "--test", str(small_clinc), "--oos-beta", "3")
    assert r.exit_code != 0 and "needs out-of-scope validation texts" in r.output
