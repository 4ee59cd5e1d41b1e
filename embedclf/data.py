"""Reading labelled and unlabelled text files (CSV, TSV, JSONL, JSON list, TXT)."""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from embedclf.errors import DataError  # noqa: F401  (re-exported: defined in errors.py)

csv.field_size_limit(64 * 1024 * 1024)


#: file name endings the readers understand (lower-cased); anything else is refused, never guessed
SUPPORTED_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson", ".json", ".txt")


@dataclass(frozen=True)
class Labeled:
    texts: list[str]
    labels: list[str]
    skipped: int = 0

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for t, y in zip(self.texts, self.labels):
            for field in (t, y):  # length-prefixed: no separator can be forged by the data
                b = field.encode("utf-8", "surrogatepass")
                h.update(len(b).to_bytes(8, "little") + b)
        return h.hexdigest()


def _records(path: Path) -> Iterator[dict]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        kind = f"{suffix!r} files" if suffix else "files without an extension"
        raise DataError(f"{path}: {kind} are not supported; use one of {', '.join(SUPPORTED_SUFFIXES)} "
                        "(e.g. save a spreadsheet as CSV)")
    try:
        if suffix in {".jsonl", ".ndjson"}:
            with path.open(encoding="utf-8") as f:
                for n, line in enumerate(f, 1):
                    if line.strip():
                        try:
                            rec = json.loads(line)
                        except json.JSONDecodeError as exc:
                            raise DataError(f"{path}:{n}: invalid JSON ({exc.msg})") from None
                        if not isinstance(rec, dict):
                            raise DataError(f"{path}:{n}: each line must be a JSON object")
                        yield rec
        elif suffix == ".json":
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON ({exc.msg})") from None
            if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
                raise DataError(f"{path}: expected a JSON list of objects")
            yield from data
        elif suffix == ".txt":
            with path.open(encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        yield {"text": line.rstrip("\n")}
        else:  # .csv, .tsv
            with path.open(encoding="utf-8-sig", newline="") as f:  # -sig: Excel's BOM
                dialect = "excel-tab" if suffix == ".tsv" else "excel"
                reader = csv.DictReader(f, dialect=dialect)
                try:
                    yield from reader
                except csv.Error as exc:
                    row_no = reader.reader.line_num
                    raise DataError(f"{path}:{row_no}: not valid {suffix[1:].upper()} ({exc})") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _column(rec: dict, col: str, path: Path, available: list[str]) -> object:
    if col not in rec:
        raise DataError(f"{path}: no column {col!r} (columns: {', '.join(available) or 'none'})")
    return rec[col]


def load_labeled(path: str | Path, text_col: str = "text", label_col: str = "label") -> Labeled:
    """Texts and labels; rows with an empty text or label are skipped and counted."""
    p = Path(path)
    texts: list[str] = []
    labels: list[str] = []
    skipped = 0
    for rec in _records(p):
        available = list(rec)
        text, label = _column(rec, text_col, p, available), _column(rec, label_col, p, available)
        if not isinstance(text, str) or not text.strip() or label is None or str(label).strip() == "":
            skipped += 1
            continue
        texts.append(text)
        labels.append(str(label).strip())
    if not texts:
        raise DataError(f"{p}: no labelled rows")
    return Labeled(texts, labels, skipped)


def load_texts(path: str | Path, text_col: str = "text", id_col: str | None = None) -> list[tuple[str | None, str]]:
    """``(id, text)`` pairs of a file to enqueue; every row is kept (the worker judges it)."""
    p = Path(path)
    out: list[tuple[str | None, str]] = []
    for rec in _records(p):
        available = list(rec)
        text = _column(rec, text_col, p, available)
        rid = _column(rec, id_col, p, available) if id_col else None
        out.append((None if rid is None else str(rid), text))  # type: ignore[arg-type]
    if not out:
        raise DataError(f"{p}: no rows")
    return out
