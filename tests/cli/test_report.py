"""``heads train`` stores the full report; ``heads report`` rebuilds JSON, Markdown and PNGs from it (real MiniLM)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from embedclf.cli import cli
from embedclf.demo import TRAIN_CSV
from embedclf.store import repository as repo
from tests.conftest import one_line_error

pytestmark = pytest.mark.postgres
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def run(settings):
    def invoke(*args: str, ok: bool = True):
        env = {"EMBEDCLF_DATABASE_URL": settings.database_url, "EMBEDCLF_BROKER_URL": settings.broker_url,
               "EMBEDCLF_EMBEDDER": "minilm", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
        if ok:
            assert result.exit_code == 0, result.output + result.stderr
        return result
    return invoke


def test_train_stores_report_and_heads_report_writes_it(run, clean_db, tmp_path):
    r = run("heads", "train", "--name", "support", "--data", str(TRAIN_CSV), "--epochs", "30",
            "--abstain-precision", "0.95", "--plots", str(tmp_path / "train-plots"))
    assert "ECE" in r.output and "abstention" in r.output and "weakest classes" in r.output
    assert {p.name for p in (tmp_path / "train-plots").iterdir()} == {
        f"support-v1-{n}" for n in ("training.png", "confusion.png", "reliability.png", "report.json", "report.md")}

    meta, artifact = repo.load_head(clean_db, "support", 1)
    rep = meta.metrics["report"]
    labels = meta.labels
    assert [row["label"] for row in rep["per_class"]] == labels
    assert sum(row["support"] for row in rep["per_class"]) == meta.metrics["n_test"]
    assert len(rep["history"]) >= 1 and rep["calibration"]["n_bins"] == 15
    assert meta.metrics["ece"] == pytest.approx(rep["calibration"]["ece"], abs=1e-4)
    # the abstention threshold travels with the weights (workers read it from the config)
    assert artifact.config.abstain_threshold == pytest.approx(rep["abstain"]["threshold"])
    assert artifact.build().config.abstain_threshold == artifact.config.abstain_threshold
    assert rep["abstain"]["val"]["answered_precision"] >= 0.95

    out = tmp_path / "report"
    r = run("heads", "report", "support", "--out", str(out))
    files = {p.name: p for p in out.iterdir()}
    # one naming scheme: `heads report` writes the very names `heads train --plots` wrote
    assert set(files) == {p.name for p in (tmp_path / "train-plots").iterdir()}
    assert all(files[n].read_bytes()[:8] == PNG for n in files if n.endswith(".png"))
    stored = json.loads(files["support-v1-report.json"].read_text())
    assert stored["report"]["per_class"] == rep["per_class"]
    assert stored["summary"]["accuracy"] == meta.metrics["accuracy"]
    md = files["support-v1-report.md"].read_text()
    assert md.startswith("# head support v1\n")
    assert "## Per class" in md and all(f"| {lbl} |" in md for lbl in labels)
    assert "![support-v1-confusion](support-v1-confusion.png)" in md
    assert "ECE" in r.output and str(out / "support-v1-report.md") in r.output


def test_heads_report_errors(run, clean_db, tmp_path):
    one_line_error(run("heads", "report", "ghost", "--out", str(tmp_path), ok=False), "head 'ghost'")
    # a version stored without a report (e.g. trained before reports existed) says so in one line
    import torch

    from embedclf.heads.checkpoint import HeadArtifact
    from embedclf.heads.mlp import HeadConfig, MLPHead

    torch.manual_seed(0)
    art = HeadArtifact.from_head(MLPHead(HeadConfig(input_dim=384, num_labels=2)), ["a", "b"],
                                 "st:all-MiniLM-L6-v2", metrics={"accuracy": 0.5})
    repo.add_head_version(clean_db, "old", art)
    one_line_error(run("heads", "report", "old", "--out", str(tmp_path), ok=False), "no stored report", "retrain")


OFF_TOPIC = ["What is the capital of Australia?", "Give me a recipe for banana bread.",
             "Who won the football world cup in 2014?", "How many moons does Jupiter have?",
             "Translate good morning into Italian.", "What is the boiling point of water in Fahrenheit?",
             "Tell me a joke about penguins.", "How tall is Mount Everest?",
             "Recommend a good science fiction novel.", "What time is sunset in Oslo in June?",
             "How do I tune a guitar to drop D?", "Explain photosynthesis in one sentence.",
             "What's the best way to learn to juggle?", "Which planet is closest to the sun?",
             "How long should I boil an egg for a runny yolk?", "Who painted the Mona Lisa?"]


def test_train_with_out_of_scope_examples_stores_the_knn_score(run, clean_db, tmp_path):
    """``--oos-data``: half the off-topic texts choose the threshold on the kNN out-of-scope score, half report
    its recall; the score's config and the training vectors travel with the head and load back."""
    oos = tmp_path / "off_topic.csv"
    oos.write_text("text\n" + "\n".join(f'"{t}"' for t in OFF_TOPIC) + "\n")
    r = run("heads", "train", "--name", "scoped", "--data", str(TRAIN_CSV), "--epochs", "20",
            "--oos-data", str(oos), "--json")
    s = json.loads(r.stdout)
    assert s["abstain_oos_score"].startswith("knn-cosine k 10 beta 3") and s["n_oos"] == len(OFF_TOPIC) // 2
    assert 0.0 <= s["oos_recall"] <= 1.0 and s["abstain_threshold"] > 0
    meta, artifact = repo.load_head(clean_db, "scoped", 1)
    cfg = artifact.config
    assert cfg.oos_score is not None and cfg.oos_score["kind"] == "knn-cosine"
    assert cfg.abstain_threshold == pytest.approx(s["abstain_threshold"], abs=1e-6)
    head = artifact.build()  # loads strictly, vectors included
    assert head.config.oos_score == cfg.oos_score and head.oos is not None
    # trained on the training part less its validation slice (the threshold's in-scope side)
    assert meta.metrics["report"]["abstain"]["test"]["n_oos"] == len(OFF_TOPIC) // 2
    one_line_error(run("heads", "train", "--name", "x", "--data", str(TRAIN_CSV), "--oos-data",
                       str(tmp_path / "missing.csv"), ok=False), "missing.csv")
    one = tmp_path / "one.csv"
    one.write_text("text\nWhat is the capital of Australia?\n")
    one_line_error(run("heads", "train", "--name", "x", "--data", str(TRAIN_CSV), "--oos-data", str(one), ok=False),
                   "at least 2 are needed")
    r = run("heads", "train", "--name", "x", "--data", str(TRAIN_CSV), "--multi-label", "--oos-data", str(oos),
            ok=False)
    assert r.exit_code != 0 and "--oos-data is for single-label heads" in r.output + r.stderr
