"""A non-editable wheel install finds its configs (and serve's page files) from any working directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from conftest import REPO


def test_wheel_install_finds_configs_from_anywhere(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "conf", src / "conf")
    shutil.copytree(REPO / "landmark_ae", src / "landmark_ae", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("landmark_ae-*.whl"))
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True, capture_output=True)
    assert (site / "landmark_ae" / "conf" / "model" / "m2.yaml").is_file()
    static = site / "landmark_ae" / "serve" / "static"  # serve's search page ships with the package
    assert {p.name for p in static.iterdir()} == {"index.html", "login.html", "app.js", "style.css"}

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "LANDMARK_AE_OUTPUTS": str(elsewhere / "outputs")}
    code = "import landmark_ae, landmark_ae.config as c; print(landmark_ae.__file__); print(c.config_dir())"
    where = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=elsewhere, env=env, check=True)
    assert all(line.startswith(str(site)) for line in where.stdout.split()), where.stdout
    proc = subprocess.run([sys.executable, "-m", "landmark_ae", "train", "model=m3", "--cfg", "job"],
                          capture_output=True, text=True, cwd=elsewhere, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "name: m3" in proc.stdout and "input_size: 92" in proc.stdout
