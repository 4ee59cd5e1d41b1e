"""PNG reports: training curve and confusion matrix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib")
from matplotlib import image as mpimg  # noqa: E402

from embedclf.reports import plot_confusion, plot_training_curve  # noqa: E402

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
        labels = [f"label_{i}" for i in range(n)]
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
