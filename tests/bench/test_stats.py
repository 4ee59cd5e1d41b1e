"""The benchmarks' pure statistics helpers (embedclf/bench/stats.py)."""

import pytest

from embedclf.bench.stats import batch_distribution, histogram, mean_ci, percentiles


def test_histogram_batches_and_percentiles():
    counts = {b["sizes"]: b["batches"] for b in histogram([1, 3, 16, 64, 64, 40], 64)}
    assert counts == {"1": 1, "2-3": 1, "4-7": 0, "8-15": 0, "16-31": 1, "32-63": 1, "64": 2}
    assert [b["sizes"] for b in histogram([5], 3)] == ["1", "2", "3", ">3"]
    d = batch_distribution(["a", "a", "b", "c", "c", "c"], max_size=3)
    assert (d["batches"], d["min"], d["max"], d["mean"], d["full_fraction"]) == (3, 1, 3, 2.0, 0.333)
    p = percentiles([1.0, 2.0, 3.0, 4.0, 100.0])
    assert p["p50"] == 3.0 and p["p50"] <= p["p95"] <= p["p99"] <= p["max"] == 100.0


def test_mean_ci_is_students_t_interval():
    # mean 2, sample sd 1, n 3: half-width t(0.975, 2) / sqrt(3), with t(0.975, 2) = 4.3027 from the t table
    ci = mean_ci([1.0, 2.0, 3.0])
    assert ci["mean"] == 2.0 and ci["n"] == 3
    assert ci["hi"] - ci["mean"] == pytest.approx(4.3027 / 3 ** 0.5, abs=1e-4) == ci["mean"] - ci["lo"]
    # a 90 % interval is narrower; with many values it shrinks towards the normal one (1.96 sd / sqrt(n))
    assert mean_ci([1.0, 2.0, 3.0], level=0.9)["hi"] < ci["hi"]
    many = mean_ci([0.0, 1.0] * 500)
    assert many["hi"] - many["mean"] == pytest.approx(1.96 * 0.50025 / 1000 ** 0.5, rel=2e-3)
    assert mean_ci([0.93]) == {"mean": 0.93, "lo": None, "hi": None, "n": 1}
    for bad in ({"values": []}, {"values": [1.0], "level": 1.0}):
        with pytest.raises(ValueError):
            mean_ci(**bad)
