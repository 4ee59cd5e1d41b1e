"""The worker's garbage-collector tuning: frozen once per process, undone when the last user restores."""

from __future__ import annotations

import gc

from worker import gctune


def test_tune_freezes_once_and_the_last_restore_undoes_it():
    before = gc.get_threshold()
    keep = [[i] for i in range(1000)]  # tracked containers alive now: they get frozen
    assert gc.get_freeze_count() == 0
    assert gctune.tune(5000) is True
    frozen = gc.get_freeze_count()
    assert frozen >= len(keep) and gc.get_threshold() == (5000, before[1], before[2])
    assert gctune.tune(9000) is True  # a second service in the process: nothing changes
    assert gc.get_freeze_count() == frozen and gc.get_threshold()[0] == 5000
    gctune.restore()
    assert gc.get_freeze_count() == frozen  # the first one still runs
    gctune.restore()
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before
    gctune.restore()  # one too many: harmless
    assert gc.get_threshold() == before


def test_zero_leaves_the_collector_alone():
    before = gc.get_threshold()
    assert gctune.tune(0) is False
    assert gc.get_freeze_count() == 0 and gc.get_threshold() == before
