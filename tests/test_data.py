"""Reading labelled / unlabelled text files in every supported format."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from embedclf.data import DataError, Labeled, load_labeled, load_texts

ROWS = [("refund please", "billing"), ("app crashes, again", "bug"), ('he said "hi"\nnew line', "other")]


def write_csv(path: Path, header: list[str], rows: list[tuple], dialect: str = "excel") -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, dialect=dialect)
        w.writerow(header)
        w.writerows(rows)
    return path


def write_jsonl(path: Path, records: list[object]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture(params=["csv", "tsv", "jsonl", "ndjson", "json"])
def labelled_file(request, tmp_path) -> Path:
    ext = request.param
    p = tmp_path / f"data.{ext}"
    if ext in ("csv", "tsv"):
        return write_csv(p, ["id", "text", "label"], [(i, t, y) for i, (t, y) in enumerate(ROWS)],
                         "excel-tab" if ext == "tsv" else "excel")
    records = [{"id": i, "text": t, "label": y} for i, (t, y) in enumerate(ROWS)]
    if ext == "json":
        p.write_text(json.dumps(records), encoding="utf-8")
        return p
    return write_jsonl(p, records)


def test_load_labeled_every_format(labelled_file):
    data = load_labeled(labelled_file)
    assert data.texts == [t for t, _ in ROWS]  # quotes, commas and newlines survive
    assert data.labels == [y for _, y in ROWS]
    assert data.skipped == 0


def test_load_texts_every_format(labelled_file):
    out = load_texts(labelled_file, id_col="id")
    assert out == [(str(i), t) for i, (t, _) in enumerate(ROWS)]
    assert [rid for rid, _ in load_texts(labelled_file)] == [None] * len(ROWS)


def test_columns_picked_by_name(tmp_path):
    p = write_csv(tmp_path / "d.csv", ["body", "category", "text", "label"],
                  [("real text", "real label", "decoy", "decoy-label")])
    data = load_labeled(p, text_col="body", label_col="category")
    assert (data.texts, data.labels) == (["real text"], ["real label"])
    assert load_texts(p, text_col="body") == [(None, "real text")]


@pytest.mark.parametrize("kwargs, missing", [({"text_col": "body"}, "body"), ({"label_col": "cat"}, "cat")])
def test_missing_column_lists_available_columns(tmp_path, kwargs, missing):
    p = write_csv(tmp_path / "d.csv", ["text", "label", "extra"], [("t", "l", "x")])
    with pytest.raises(DataError) as info:
        load_labeled(p, **kwargs)
    msg = str(info.value)
    assert repr(missing) in msg
    assert "text, label, extra" in msg
    assert str(p) in msg


def test_missing_id_column_in_load_texts(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"text": "a", "other": 1}])
    with pytest.raises(DataError, match=r"'ident'.*text, other"):
        load_texts(p, id_col="ident")


def test_empty_rows_skipped_and_counted(tmp_path):
    records = [
        {"text": "keep me", "label": "a"},
        {"text": "", "label": "a"},
        {"text": "   ", "label": "a"},
        {"text": "no label", "label": ""},
        {"text": "blank label", "label": "  "},
        {"text": "null label", "label": None},
        {"text": None, "label": "a"},
        {"text": 42, "label": "a"},
        {"text": "numeric label kept", "label": 0},
        {"text": "label stripped", "label": "  b  "},
    ]
    data = load_labeled(write_jsonl(tmp_path / "d.jsonl", records))
    assert data.texts == ["keep me", "numeric label kept", "label stripped"]
    assert data.labels == ["a", "0", "b"]
    assert data.skipped == 7


def test_csv_short_rows_and_blank_cells_skipped(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("text,label\nfirst,a\n,b\nshort-row\n\nlast,c\n", encoding="utf-8")
    data = load_labeled(p)
    assert data.texts == ["first", "last"] and data.labels == ["a", "c"]
    assert data.skipped == 2


def test_all_rows_empty_is_an_error(tmp_path):
    p = write_jsonl(tmp_path / "d.jsonl", [{"text": "", "label": "a"}])
    with pytest.raises(DataError, match="no labelled rows"):
        load_labeled(p)


def test_invalid_jsonl_line_named(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "a", "label": "x"}\n\n{"text": "b", "label": \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"d\.jsonl:3: invalid JSON"):
        load_labeled(p)


def test_jsonl_line_must_be_object(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"text": "a", "label": "x"}\n["not", "an", "object"]\n', encoding="utf-8")
    with pytest.raises(DataError, match=r":2: each line must be a JSON object"):
        load_labeled(p)


@pytest.mark.parametrize("content", ['{"text": "a"}', '[{"text": "a"}, 3]', '"just a string"'])
def test_json_must_be_list_of_objects(tmp_path, content):
    p = tmp_path / "d.json"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match="JSON list of objects"):
        load_texts(p)


@pytest.mark.parametrize("ext", ["csv", "jsonl", "txt", "json"])
def test_non_utf8_file(tmp_path, ext):
    p = tmp_path / f"latin1.{ext}"
    p.write_bytes("text,label\ncaf\u00e9,a\n".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        load_texts(p)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_labeled(tmp_path / "nope.csv")


def test_txt_lines_become_texts(tmp_path):
    p = tmp_path / "d.txt"
    p.write_text("first line\n\n   \nsecond, with comma\nlast no newline", encoding="utf-8")
    assert load_texts(p) == [(None, "first line"), (None, "second, with comma"), (None, "last no newline")]
    with pytest.raises(DataError, match="'label'"):
        load_labeled(p)


def test_load_texts_keeps_every_row(tmp_path):
    # the worker judges bad texts, so the loader must not drop them
    p = write_jsonl(tmp_path / "d.jsonl", [{"text": ""}, {"text": "ok"}, {"text": 5}])
    assert [t for _, t in load_texts(p)] == ["", "ok", 5]


def test_load_texts_empty_file_is_an_error(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("text\n", encoding="utf-8")
    with pytest.raises(DataError, match="no rows"):
        load_texts(p)


def test_csv_with_utf8_bom(tmp_path):
    p = tmp_path / "excel.csv"
    p.write_bytes("text,label\nhello,a\n".encode("utf-8-sig"))
    assert load_labeled(p).texts == ["hello"]


# --- fingerprint ---------------------------------------------------------------------


def test_fingerprint_stable_across_loads_and_formats(tmp_path):
    a = load_labeled(write_jsonl(tmp_path / "a.jsonl", [{"text": t, "label": y} for t, y in ROWS]))
    b = load_labeled(write_csv(tmp_path / "b.csv", ["text", "label"], ROWS))
    assert a.fingerprint() == b.fingerprint() == Labeled([t for t, _ in ROWS], [y for _, y in ROWS]).fingerprint()
    assert len(a.fingerprint()) == 64 and int(a.fingerprint(), 16) >= 0


def test_fingerprint_is_order_and_content_sensitive():
    base = Labeled(["a", "b"], ["x", "y"])
    assert Labeled(["b", "a"], ["y", "x"]).fingerprint() != base.fingerprint()
    assert Labeled(["a", "b"], ["y", "x"]).fingerprint() != base.fingerprint()
    assert Labeled(["a", "c"], ["x", "y"]).fingerprint() != base.fingerprint()
    assert Labeled(["a"], ["x"]).fingerprint() != base.fingerprint()
    # moving characters between text and label, or between rows, changes it too
    assert Labeled(["ab"], ["c"]).fingerprint() != Labeled(["a"], ["bc"]).fingerprint()
    assert Labeled(["ab", "c"], ["x", "x"]).fingerprint() != Labeled(["a", "bc"], ["x", "x"]).fingerprint()
    # skipped count is bookkeeping, not data
    assert Labeled(["a", "b"], ["x", "y"], skipped=5).fingerprint() == base.fingerprint()


def test_fingerprint_handles_surrogates():
    assert len(Labeled(["bad \ud800 text"], ["x"]).fingerprint()) == 64


def test_fingerprint_cannot_be_forged_with_separators():
    from embedclf.data import Labeled

    a = Labeled(["a\x1fb", "c"], ["x", "y"])
    b = Labeled(["a", "b\x1ec"], ["x\x1fb", "y"])
    assert a.fingerprint() != b.fingerprint()


# --- refused formats and parse errors that name the file --------------------------------


@pytest.mark.parametrize("name", ["sheet.xlsx", "data.parquet", "data.csv.gz", "noextension"])
def test_unknown_extension_is_refused_not_read_as_csv(tmp_path, name):
    p = tmp_path / name
    p.write_text("text,label\nhello,a\n", encoding="utf-8")  # parseable as CSV: must still be refused
    for load in (load_labeled, load_texts):
        with pytest.raises(DataError) as info:
            load(p)
        msg = str(info.value)
        assert msg.startswith(f"{p}: ") and "not supported" in msg
        assert ".csv, .tsv, .jsonl, .ndjson, .json, .txt" in msg


def test_extension_match_is_case_insensitive(tmp_path):
    p = write_csv(tmp_path / "UPPER.CSV", ["text", "label"], ROWS)
    assert load_labeled(p).labels == [y for _, y in ROWS]


def test_invalid_json_names_file_line_and_column(tmp_path):
    p = tmp_path / "broken.json"
    p.write_text('[{"text": "a", "label": "x"},\n {"text": "b", "label": }]', encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_labeled(p)
    assert str(info.value).startswith(f"{p}:2:")
    assert "invalid JSON" in str(info.value)


def test_csv_reader_error_names_file_and_line(tmp_path):
    p = tmp_path / "big.csv"
    p.write_text("text,label\nshort,a\n" + "x" * 50 + ",b\n", encoding="utf-8")
    old = csv.field_size_limit(20)
    try:
        with pytest.raises(DataError, match=r"big\.csv:3: not valid CSV \(field larger than field limit"):
            load_labeled(p)
    finally:
        csv.field_size_limit(old)
