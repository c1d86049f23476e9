"""models/ and analyses/ import as mechjax.models / mechjax.analyses, from a built wheel too."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_editable_install_maps_models_and_analyses():
    import mechjax.analyses
    import mechjax.models.llama

    assert Path(mechjax.models.llama.__file__).parent == ROOT / "models"
    assert Path(mechjax.analyses.__file__).parent == ROOT / "analyses"


def test_built_wheel_imports_models_and_analyses(tmp_path):
    dist, site = tmp_path / "dist", tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(ROOT),
        ],
        check=True,
    )
    wheel = next(dist.glob("mechjax-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "mechjax/models/llama.py" in names and "mechjax/analyses/__init__.py" in names
    assert not any(n.startswith(("models/", "analyses/")) for n in names), (
        "no top-level models package"
    )
    # every subpackage of the source tree is in the wheel (pyproject lists them by hand)
    for top, prefix in (
        ("mechjax", "mechjax"),
        ("models", "mechjax/models"),
        ("analyses", "mechjax/analyses"),
    ):
        for init in (ROOT / top).rglob("__init__.py"):
            rel = init.relative_to(ROOT / top).as_posix()
            assert f"{prefix}/{rel}" in names, f"{prefix}/{rel} missing from the wheel"
    assert "mechjax/tasks/data/lm_arithmetic/entity_dict.json" in names
    for f in (ROOT / "mechjax" / "steering" / "data").iterdir():  # the steering prompts, MIT
        assert f"mechjax/steering/data/{f.name}" in names, f"{f.name} missing from the wheel"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
    )
    code = (
        "import mechjax, mechjax.models.llama, mechjax.analyses; "
        "print(mechjax.__file__); print(mechjax.models.llama.__file__)"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert all(p.startswith(str(site)) for p in out), out
