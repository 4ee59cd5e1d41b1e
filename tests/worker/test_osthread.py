import sys
import threading
from pathlib import Path

import pytest

from worker.osthread import name_this_thread


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="OS thread names are read from /proc")
def test_a_thread_gets_its_os_name_shortened_to_fifteen_bytes():
    seen = {}

    def run():
        seen["ok"] = name_this_thread()
        seen["comm"] = Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip()

    t = threading.Thread(target=run, name="embedclf-write-12345")
    t.start()
    t.join()
    assert seen == {"ok": True, "comm": "ec-write-12345"}
    assert Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip() != "ec-write-12345"
