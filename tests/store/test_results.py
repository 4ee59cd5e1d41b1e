"""The write path: several batches committed in one statement keep one completed_at each."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from embedclf.store.results import write_results

pytestmark = pytest.mark.postgres


def _rows(task: str, n: int) -> list[dict]:
    return [{"task_id": task, "item": i, "head_name": "h", "status": "ok", "label": "a", "score": 0.5,
             "top3": [{"label": "a", "score": 0.5}], "text": f"{task} {i}", "fingerprint": "ab" * 16}
            for i in range(n)]


def _stamps(engine) -> list[tuple[str, int]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT string_agg(DISTINCT task_id, ','), count(*) FROM predictions GROUP BY completed_at "
            "ORDER BY completed_at"))]


def test_batches_written_together_get_their_own_completed_at_in_order(clean_db):
    rows = _rows("t1", 3) + _rows("t2", 2) + _rows("t3", 4)
    result = write_results(clean_db, rows, sizes=[3, 2, 4])
    assert result.inserted == 9
    assert _stamps(clean_db) == [("t1", 3), ("t2", 2), ("t3", 4)]
    with clean_db.connect() as conn:
        spread = conn.execute(text("SELECT max(completed_at) - min(completed_at) FROM predictions")).scalar_one()
    assert spread.total_seconds() == pytest.approx(2e-6)  # one transaction: microseconds apart


def test_one_batch_gets_one_completed_at_and_sizes_must_add_up(clean_db):
    write_results(clean_db, _rows("solo", 5), sizes=[5])
    assert _stamps(clean_db) == [("solo", 5)]
    with pytest.raises(ValueError, match="add up to 3 rows, got 4"):
        write_results(clean_db, _rows("bad", 4), sizes=[1, 2])
