"""Progress: a bar on a terminal, a few plain lines in a log."""

from __future__ import annotations

import io

from embedclf.progress import LineProgress, bar


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_not_a_terminal_gets_periodic_lines_not_carriage_returns():
    out = io.StringIO()
    with bar(total=1000, desc="embedding", unit="text", file=out, every_s=3600) as b:
        for _ in range(1000):
            b.update(1)
    text = out.getvalue()
    assert "\r" not in text and text.count("\n") == 1  # one line at the end, none of the 1,000 updates
    assert text.startswith("embedding: 1000/1000 text (100%),")


def test_lines_come_at_most_every_interval():
    out = io.StringIO()
    p = LineProgress(10, "x", "it", out, every_s=0.0)
    p.update(5)
    p.update(5)
    p.close()
    assert out.getvalue().splitlines()[:2] == [line for line in out.getvalue().splitlines()[:2] if "x: " in line]
    assert len(out.getvalue().splitlines()) == 3 and "10/10 it (100%)" in out.getvalue().splitlines()[-1]


def test_a_terminal_gets_tqdm_and_disabled_prints_nothing():
    from tqdm import tqdm

    b = bar(total=3, desc="t", file=Tty())
    assert isinstance(b, tqdm)
    b.close()
    out = io.StringIO()
    with bar(total=3, disable=True, file=out) as off:
        off.update(3)
    assert out.getvalue() == "" and off.n == 3


def test_postfix_goes_into_the_line_and_every_kind_accepts_tqdm_postfix_calls():
    out = io.StringIO()
    with bar(total=2, desc="search", unit="trial", file=out) as b:
        b.update(1)
        b.set_postfix(best_val_acc="0.912")
        b.update(1)
    assert out.getvalue().strip() == out.getvalue().strip().splitlines()[-1]
    assert out.getvalue().rstrip().endswith("trial/s, best_val_acc=0.912")
    for kind in (bar(total=1, disable=True), bar(total=1, file=Tty())):
        kind.set_postfix(a=1, refresh=False)
        kind.set_postfix_str("b", refresh=False)
        kind.close()
    line = bar(total=1, file=io.StringIO())
    line.set_postfix_str("tensors 1/2", refresh=False)
    line.update(1)
    line.close()
    assert line.file.getvalue().rstrip().endswith(", tensors 1/2")
