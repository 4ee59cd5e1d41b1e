"""Rough edges of the CLI: heads that do not exist, ISO 8601 dates in ``--json``, refused file formats."""

from __future__ import annotations

import datetime as dt
import json
import secrets

import numpy as np
import pytest

from embedclf.cli.common import to_json
from tests.conftest import one_line_error
from tests.helpers import tiny_head


def iso(value: str) -> dt.datetime:
    """A date-time written as ISO 8601 (``T`` between date and time, an offset)."""
    assert isinstance(value, str) and "T" in value, value
    parsed = dt.datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed


def test_to_json_writes_iso_dates_and_plain_numbers():
    when = dt.datetime(2026, 12, 1, 18, 5, 7, 123456, tzinfo=dt.timezone.utc)
    out = json.loads(to_json({"b": when, "a": dt.date(2026, 12, 1), "n": np.float32(0.5), "k": np.int64(3)}))
    assert out == {"a": "2026-12-01", "b": "2026-12-01T18:05:07.123456+00:00", "k": 3, "n": 0.5}
    assert to_json({"b": 1, "a": 2}) == '{"a": 2, "b": 1}'


@pytest.mark.postgres
def test_show_and_list_of_a_head_that_does_not_exist(run, clean_db):
    one_line_error(run("heads", "show", "nope", ok=False), "head 'nope' does not exist", "no heads yet")
    assert json.loads(run("heads", "list", "--json").stdout) == []
    tiny_head(clean_db, "support")
    tiny_head(clean_db, "billing")
    for args in (("heads", "show", "nope"), ("heads", "show", "nope", "1"), ("heads", "list", "nope"),
                 ("heads", "list", "nope", "--json"), ("heads", "report", "nope", "--out", "unused"),
                 ("heads", "activate", "nope", "1"), ("heads", "rollback", "nope")):
        r = run(*args, ok=False)
        one_line_error(r, "head 'nope' does not exist (heads: billing, support)")
        assert r.stdout == ""
    # a head that exists keeps its precise message
    one_line_error(run("heads", "show", "support", "9", ok=False), "head 'support' has no version 9")
    assert "support" in run("heads", "list", "support").output


@pytest.mark.postgres
def test_dates_in_json_outputs_are_iso_8601(run, clean_db):
    before = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)
    tiny_head(clean_db, "support")
    listed = json.loads(run("heads", "list", "--json").stdout)
    assert [h["name"] for h in listed] == ["support"]
    assert iso(listed[0]["created_at"]) > before
    shown = json.loads(run("heads", "show", "support").stdout)
    assert iso(shown["created_at"]) == iso(listed[0]["created_at"])

    name = f"edges_{secrets.token_hex(3)}"
    from embedclf.store.datasets import delete_dataset, import_examples

    import_examples(clean_db, name, ["a text", "another"], ["x", "y"])
    try:
        rows = [d for d in json.loads(run("data", "list", "--json").stdout) if d["name"] == name]
        assert len(rows) == 1 and iso(rows[0]["created_at"]) > before
    finally:
        delete_dataset(clean_db, name)


@pytest.mark.postgres
@pytest.mark.parametrize("name", ["train.xlsx", "train.parquet"])
def test_unknown_file_formats_are_refused_by_every_reader(run, clean_db, tmp_path, name):
    path = tmp_path / name
    path.write_text("text,label\nhello,a\nworld,b\n")  # readable as CSV: must be refused all the same
    for args in (("heads", "train", "--name", "x", "--data", str(path)),
                 ("evaluate", "--train", str(path), "--test", str(path)),
                 ("enqueue", "--head", "x", "--file", str(path)),
                 ("data", "import", "--dataset", "x", str(path))):
        one_line_error(run(*args, ok=False), str(path), "not supported", ".csv, .tsv, .jsonl")
    assert json.loads(run("heads", "list", "--json").stdout) == []


@pytest.mark.postgres
def test_json_parse_errors_name_the_file_in_one_line(run, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('[{"text": "a", "label": "x"},\n {"text": "b" "label": "y"}]')
    one_line_error(run("heads", "train", "--name", "x", "--data", str(broken), ok=False), f"{broken}:2:",
                   "invalid JSON")
    lines = tmp_path / "broken.jsonl"
    lines.write_text('{"text": "a", "label": "x"}\n{"text": \n')
    one_line_error(run("enqueue", "--head", "x", "--file", str(lines), ok=False), f"{lines}:2: invalid JSON")


@pytest.mark.postgres
def test_evaluate_plots_follow_the_naming_scheme(run, tmp_path):
    from embedclf.demo import HOLDOUT_CSV, TRAIN_CSV

    r = run("evaluate", "--train", str(TRAIN_CSV), "--test", str(HOLDOUT_CSV), "--epochs", "3", "--plots",
            str(tmp_path), "--json")
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(f"evaluate-{k}" for k in ("report.json", "report.md", "training.png", "confusion.png",
                                                     "reliability.png"))
    assert sorted(json.loads(r.stdout)["plots"]) == sorted(str(tmp_path / n) for n in names)
