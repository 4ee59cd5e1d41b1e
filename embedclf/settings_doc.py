"""``docs/settings.md``, generated from the settings object (``python -m embedclf.settings_doc > docs/settings.md``).

Each setting's meaning is the ``#:`` comment above its field in ``embedclf/config.py``; a test checks that
the committed page is what this prints.
"""

from __future__ import annotations

import inspect
import os
import re

from embedclf.config import PREFIX, BatchSettings, Settings

_FIELD = re.compile(r"^\s+(\w+): [^=]+=")


def _comments(cls: type) -> dict[str, str]:
    out: dict[str, str] = {}
    block: list[str] = []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            block.append(stripped[2:].strip())
            continue
        m = _FIELD.match(line)
        if m and block:
            out[m.group(1)] = " ".join(block)
        block = []
    return out


def rows() -> list[tuple[str, str, str]]:
    defaults = Settings().describe()
    home = os.path.expanduser("~")
    out = []
    for cls, prefix, key_prefix in ((Settings, PREFIX, ""), (BatchSettings, PREFIX + "BATCH_", "batch.")):
        notes = _comments(cls)
        for name in (f for f in cls.__dataclass_fields__ if f != "batch"):
            value = defaults[key_prefix + name]
            shown = str(value).replace(home, "~") if value != "" else "(empty)"
            out.append((prefix + name.upper(), shown, notes.get(name, "")))
    return out


def markdown() -> str:
    lines = ["# Settings", "",
             "One settings object (`embedclf/config.py`), read from `EMBEDCLF_*` environment variables; "
             "`embedclf config` prints the values in effect (secrets masked). This page is generated: "
             "`python -m embedclf.settings_doc > docs/settings.md`.", "",
             "| variable | default | meaning |", "|---|---|---|"]
    for var, default, note in rows():
        note = re.sub(r"``([^`]+)``", r"`\1`", note).replace("|", "/")
        lines.append(f"| `{var}` | `{default}` | {note} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # pragma: no cover
    print(markdown(), end="")
