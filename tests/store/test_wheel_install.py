"""A wheel carries the migrations: `embedclf db upgrade` works from any directory after a wheel install."""

from __future__ import annotations

import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import PG_SERVER

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
ROOT = Path(__file__).resolve().parents[2]


def test_db_upgrade_from_another_directory_after_a_wheel_install(tmp_path):
    import secrets

    from embedclf.store.db import drop_database

    wheels = tmp_path / "wheels"
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheels), str(ROOT)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-3000:]
    [wheel] = wheels.glob("embedclf-*.whl")
    env_dir = tmp_path / "fresh"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    inst = subprocess.run([str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], capture_output=True,
                          text=True, timeout=300)
    assert inst.returncode == 0, inst.stderr[-3000:]
    # the dependencies come from this test's environment (a .pth line), not from a second copy of torch & co;
    # embedclf itself comes from the wheel: its site-packages is searched first
    fresh_site = next((env_dir / "lib").glob("python*/site-packages"))
    (fresh_site / "zz_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    where = subprocess.run([str(py), "-c", "import embedclf, embedclf.store.migrate as m; print(embedclf.__file__); "
                            "print(m.migrations_dir())"], capture_output=True, text=True, cwd=tmp_path)
    assert where.returncode == 0, where.stderr[-2000:]
    pkg, migrations = where.stdout.split()
    assert pkg.startswith(str(env_dir)) and migrations.startswith(str(env_dir))  # not the checkout's
    assert Path(migrations, "versions", "0003_multitext.py").is_file()

    url = f"{PG_SERVER}/embedclf_wheel_{secrets.token_hex(3)}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    try:
        run = subprocess.run([str(env_dir / "bin" / "embedclf"), "db", "upgrade", "--create"], cwd=elsewhere,
                             env={"EMBEDCLF_DATABASE_URL": url, "PATH": "/usr/bin:/bin"}, capture_output=True,
                             text=True, timeout=120)
        assert run.returncode == 0, run.stderr[-2000:]
        current = subprocess.run([str(env_dir / "bin" / "embedclf"), "db", "current"], cwd=elsewhere,
                                 env={"EMBEDCLF_DATABASE_URL": url, "PATH": "/usr/bin:/bin"}, capture_output=True,
                                 text=True, timeout=120)
        assert current.stdout.strip() == "0004", current.stdout + current.stderr
    finally:
        drop_database(url)
