"""PNG reports: training curve, confusion matrix, reliability diagram (what they draw and say)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
from matplotlib import image as mpimg  # noqa: E402

from embedclf.reports import (  # noqa: E402
    best_by_accuracy,
    confusion_figure,
    kept_epoch_note,
    merge_sparse_bins,
    plot_confusion,
    plot_training_curve,
    reliability_figure,
    training_figure,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_png(path: Path) -> np.ndarray:
    data = path.read_bytes()
    assert len(data) > 1000, "suspiciously small PNG"
    assert data.startswith(PNG_MAGIC)
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[2] in (3, 4)
    return img


def history(n: int) -> list[dict]:
    return [
        {"epoch": e, "train_loss": 2.0 / e, "val_loss": 2.2 / e + 0.01 * e, "val_accuracy": min(1.0, 0.3 + 0.1 * e)}
        for e in range(1, n + 1)
    ]


def confusion(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    cm = rng.integers(0, 5, size=(n, n))
    cm[np.diag_indices(n)] += 30
    return cm


def test_training_curve_png(tmp_path):
    out = plot_training_curve(history(12), best_epoch=7, path=tmp_path / "curve.png")
    assert out == tmp_path / "curve.png"
    img = read_png(out)
    h, w = img.shape[:2]
    assert 200 <= h <= 2000 and 400 <= w <= 3000
    assert w > h  # two panels side by side
    # not a blank canvas: plenty of distinct colours
    assert len(np.unique(img.reshape(-1, img.shape[2]), axis=0)) > 20


def test_training_curve_single_epoch(tmp_path):
    read_png(plot_training_curve(history(1), best_epoch=1, path=tmp_path / "one.png"))


def test_confusion_png(tmp_path):
    labels = ["billing", "bug", "shipping", "account", "feature"]
    out = plot_confusion(confusion(5), labels, tmp_path / "cm.png")
    assert out.exists()
    img = read_png(out)
    h, w = img.shape[:2]
    assert 200 <= h <= 3000 and 200 <= w <= 3000
    assert w >= h  # square matrix plus a colour bar
    assert len(np.unique(img.reshape(-1, img.shape[2]), axis=0)) > 20


def test_confusion_grows_with_labels_but_is_capped(tmp_path):
    def size(n: int, name: str) -> tuple[int, int]:
        labels = [f"label_{i:02d}" for i in range(n)]
        return read_png(plot_confusion(confusion(n), labels, tmp_path / name, max_labels=25)).shape[:2]

    small, at_cap, over_cap = size(4, "4.png"), size(25, "25.png"), size(60, "60.png")
    assert at_cap[0] > small[0] and at_cap[1] > small[1]
    # with more labels than max_labels, only the 25 most-confused are drawn
    assert over_cap == at_cap


def test_confusion_handles_empty_rows(tmp_path):
    cm = np.array([[3, 1, 0], [0, 0, 0], [1, 0, 4]])  # label 'b' never in the test set
    read_png(plot_confusion(cm, ["a", "b", "c"], tmp_path / "empty-row.png"))


def test_reliability_png_before_and_after(tmp_path):
    from embedclf.reports import plot_reliability
    from embedclf.training.metrics import reliability_bins

    rng = np.random.default_rng(0)
    conf = rng.uniform(0.3, 1.0, 500)
    correct = rng.random(500) < conf
    before = reliability_bins(np.minimum(conf * 1.3, 1.0), correct)
    after = reliability_bins(conf, correct)
    out = plot_reliability(after, tmp_path / "rel.png", uncalibrated=before, ece=0.02, ece_uncalibrated=0.15)
    img = read_png(out)
    h, w = img.shape[:2]
    assert h > w  # diagram above a histogram of counts
    assert len(np.unique(img.reshape(-1, img.shape[2]), axis=0)) > 20
    # empty bins and a single series are fine too
    read_png(plot_reliability(reliability_bins(np.array([0.95, 0.97]), np.array([1, 1])), tmp_path / "one.png"))


# --- what the figures say ------------------------------------------------------------------


def texts(fig) -> list[str]:
    """Every piece of text drawn on a figure: titles, annotations, legends, tick labels."""
    from matplotlib.text import Text

    return [t.get_text() for t in fig.findobj(Text) if t.get_text()]


@pytest.fixture(autouse=True)
def close_figures():
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def test_confusion_shows_counts_in_non_zero_cells_and_the_head_in_its_title():
    cm = np.array([[40, 2, 0], [0, 35, 5], [1, 0, 0]])
    fig = confusion_figure(cm, ["billing", "bug", "other"], title="head support v3")
    ax = fig.axes[0]
    cells = sorted((round(t.get_position()[1]), round(t.get_position()[0]), t.get_text()) for t in ax.texts)
    assert cells == [(0, 0, "40"), (0, 1, "2"), (1, 1, "35"), (1, 2, "5"), (2, 0, "1")]  # zeros stay blank
    assert ax.get_title().startswith("head support v3: confusion matrix")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["billing (42)", "bug (40)", "other (1)"]
    # dark (mostly right) cells get white text, pale ones black
    colours = {t.get_text(): t.get_color() for t in ax.texts}
    assert colours["40"] == "white" and colours["2"] == "black"


def test_confusion_with_many_labels_shows_the_most_confused_with_their_counts():
    n = 77
    cm = np.diag(np.full(n, 30))
    for true, pred, count in [(5, 9, 7), (9, 5, 4), (40, 41, 2)]:
        cm[true, pred] = count
    labels = [f"intent_{i:02d}" for i in range(n)]
    fig = confusion_figure(cm, labels, max_labels=30, title="head banking v1")
    ax = fig.axes[0]
    shown = [t.get_text().split(" (")[0] for t in ax.get_yticklabels()]
    assert len(shown) == 30 and {"intent_05", "intent_09", "intent_40", "intent_41"} <= set(shown)
    assert sorted(int(t.get_text()) for t in ax.texts) == sorted([7, 4, 2] + [30] * 30)
    assert "30 most-confused of 77 labels" in ax.get_title()
    assert ax.get_xticklabels()[-1].get_text() == "(any label not shown)"


def test_confusion_rows_add_up_when_some_labels_are_left_out():
    n = 45
    cm = np.diag(np.full(n, 20))
    for i in range(n):  # every label loses a few texts to the next one: more confused labels than fit
        cm[i, (i + 1) % n] = 1 + i % 4
    labels = [f"l{i}" for i in range(n)]
    ax = confusion_figure(cm, labels, max_labels=30).axes[0]
    rows: dict[int, int] = {}
    for t in ax.texts:
        row = round(t.get_position()[1])
        rows[row] = rows.get(row, 0) + int(t.get_text())
    supports = [int(t.get_text().split("(")[1].rstrip(")")) for t in ax.get_yticklabels()]
    assert len(supports) == 30 and [rows[r] for r in range(30)] == supports
    other_column = [t for t in ax.texts if round(t.get_position()[0]) == 30]
    assert other_column, "some shown labels lose texts to labels not shown"


def test_best_epoch_rule_matches_the_trainer():
    torch = pytest.importorskip("torch")
    from embedclf.training.trainer import TrainParams, train_head

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 16)) * 1.2
    y = rng.integers(0, 4, size=1200)
    X = (centers[y] + rng.normal(size=(1200, 16))).astype(np.float32)
    torch.set_num_threads(1)
    result = train_head(X, [f"c{i}" for i in y], TrainParams(hidden_dim=32, epochs=25, patience=6, seed=1,
                                                               linear_member=False))
    assert len(result.val_y) >= 100  # the trainer chooses an epoch only with enough validation texts
    assert best_by_accuracy(result.history) == result.best_epoch
    assert "highest validation accuracy" in kept_epoch_note(result.history, result.best_epoch)


def test_kept_last_epoch_is_explained_and_the_unused_peak_marked():
    hist = [{"epoch": e, "train_loss": 1 / e, "val_loss": 1 / e, "val_accuracy": a}
            for e, a in enumerate([0.5, 0.9, 0.8, 0.8], 1)]
    note = kept_epoch_note(hist, 4)
    assert "last epoch (4)" in note and "too small" in note
    pytest.importorskip("torch")
    from embedclf.training.trainer import MIN_CALIBRATION_EXAMPLES

    assert f"(< {MIN_CALIBRATION_EXAMPLES} texts)" in note  # the trainer's threshold, not a stale copy
    said = texts(training_figure(hist, 4, title="head support v1"))
    assert note in said and "head support v1: training curve" in said
    assert "peak validation accuracy (epoch 2), not used" in said
    assert "kept: epoch 4 (validation accuracy 0.800)" in said
    # chosen by accuracy: explained as such, no "peak not used" marker
    said = texts(training_figure(hist, 2))
    assert any("epoch 2, the highest validation accuracy" in t for t in said)
    assert not any("not used" in t for t in said)
    assert kept_epoch_note(hist, 0) == ""


def test_sparse_reliability_bins_are_merged_with_weighted_means():
    def b(lo: float, n: int, conf: float | None, acc: float | None) -> dict:
        return {"lo": lo, "hi": lo + 0.1, "count": n, "confidence": conf, "accuracy": acc}

    bins = [b(0.3, 0, None, None), b(0.4, 3, 0.45, 0.0), b(0.5, 2, 0.55, 0.5), b(0.6, 6, 0.65, 0.5),
            b(0.7, 40, 0.75, 0.75), b(0.8, 1, 0.85, 1.0)]
    merged = merge_sparse_bins(bins, min_count=10)
    assert [(m["lo"], m["hi"], m["count"], m["bins"]) for m in merged] == [(0.4, 0.7, 11, 3), (0.7, 0.9, 41, 2)]
    assert merged[0]["confidence"] == pytest.approx((3 * 0.45 + 2 * 0.55 + 6 * 0.65) / 11)
    assert merged[0]["accuracy"] == pytest.approx((0 + 1 + 3) / 11)
    assert merged[1]["accuracy"] == pytest.approx((30 + 1) / 41)
    # fewer texts than min_count in total: one point; nothing at all: no point
    assert [m["count"] for m in merge_sparse_bins(bins[:3], min_count=10)] == [5]
    assert merge_sparse_bins([b(0.1, 0, None, None)]) == []


def test_reliability_with_temperature_one_says_so_and_draws_one_curve():
    from embedclf.training.metrics import reliability_bins

    rng = np.random.default_rng(0)
    conf = np.concatenate([rng.uniform(0.3, 1.0, 500), [0.1, 0.15, 0.22]])  # three texts in three sparse bins
    correct = rng.random(503) < conf
    bins = reliability_bins(conf, correct)
    # the uncalibrated path differs in the 7th digit (float32 logits against float64 probabilities)
    raw = [dict(x, confidence=None if x["confidence"] is None else x["confidence"] + 3e-7) for x in bins]
    fig = reliability_figure(bins, uncalibrated=raw, ece=0.02, ece_uncalibrated=0.02,
                             temperature=1.0, title="head support v1")
    ax = fig.axes[0]
    assert len(ax.lines) == 2  # the diagonal and one curve, not "before" hidden under "after"
    assert any("temperature = 1" in t for t in texts(fig))
    assert ax.get_title() == "head support v1: reliability diagram (top-1 confidence)"
    # every point stands for at least 10 texts
    assert len(ax.lines[1].get_xdata()) == len(merge_sparse_bins(bins)) < sum(1 for x in bins if x["count"])

    before = reliability_bins(np.minimum(conf * 1.3, 1.0), correct)
    fig = reliability_figure(bins, uncalibrated=before, ece=0.02, ece_uncalibrated=0.15, temperature=1.4)
    assert len(fig.axes[0].lines) == 3
    assert not any("temperature =" in t for t in texts(fig))
    assert {"before temperature scaling, ECE 0.150", "after temperature scaling, ECE 0.020"} <= set(texts(fig))


def test_write_report_names_every_file_after_the_head_version(tmp_path):
    from embedclf.cli.report import report_stem, write_report

    bins = [{"lo": i / 15, "hi": (i + 1) / 15, "count": 20 if i > 9 else 0,
             "confidence": (i + 0.5) / 15 if i > 9 else None,
             "accuracy": 0.8 if i > 9 else None} for i in range(15)]
    report = {"labels": ["a", "b"], "confusion": [[0, 0, 50], [0, 1, 3], [1, 1, 47]], "history": history(5),
              "best_epoch": 5, "per_class": [], "members": {},
              "calibration": {"temperature": 1.0, "n_bins": 15, "ece": 0.01, "ece_uncalibrated": 0.01,
                              "bins": bins, "bins_uncalibrated": bins}}
    paths = write_report(tmp_path, "head team/x v2", {"accuracy": 0.97}, report, stem=report_stem("team/x", 2))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"team_x-v2-{k}" for k in ("report.json", "report.md", "training.png", "confusion.png", "reliability.png"))
    assert sorted(paths) == sorted(str(p) for p in tmp_path.iterdir())
    for p in tmp_path.glob("*.png"):
        read_png(p)


def test_report_files_share_one_naming_scheme():
    from embedclf.cli.report import report_stem

    assert report_stem("support", 3) == "support-v3"
    # a head name is not a path: no directories, no hidden files
    assert report_stem("team/intents v2", 1) == "team_intents_v2-v1"
    assert report_stem("../x", 2) == "_x-v2"
    assert report_stem("..", 1) == "_-v1"


def test_wilson_interval_narrows_with_more_texts():
    from embedclf.reports import wilson_interval

    lo10, hi10 = wilson_interval(0.5, 10)
    lo1000, hi1000 = wilson_interval(0.5, 1000)
    assert lo10 < lo1000 < 0.5 < hi1000 < hi10
    assert (round(lo10, 3), round(hi10, 3)) == (0.237, 0.763)  # the textbook Wilson interval for 5 of 10
    assert wilson_interval(1.0, 20)[1] == 1.0 and wilson_interval(0.0, 20)[0] == 0.0
    assert wilson_interval(0.7, 0) == (0.0, 1.0)


def test_a_long_title_wraps_inside_the_figure(tmp_path):
    """Two file paths (evaluate's title) used to run off both sides of the figure: they wrap now."""
    from embedclf.training.metrics import reliability_bins

    rng = np.random.default_rng(0)
    conf = rng.uniform(0.3, 1.0, 300)
    title = "../shared/datasets/banking77/train.csv -> ../shared/datasets/banking77/test.csv"
    fig = reliability_figure(reliability_bins(conf, rng.random(300) < conf), title=title)
    fig.savefig(tmp_path / "r.png")  # draws, so the title's extent is known
    shown = fig.axes[0].get_title()
    assert shown.replace("\n", " ") == f"{title}: reliability diagram (top-1 confidence)"
    assert shown.count("\n") >= 1 and all(len(line) <= 63 for line in shown.splitlines())
    box = fig.axes[0].title.get_window_extent(fig.canvas.get_renderer())
    width = fig.get_size_inches()[0] * fig.dpi
    assert box.x0 >= 0 and box.x1 <= width
