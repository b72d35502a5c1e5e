"""The wheel a user installs says what it is: project URLs, classifiers, the Apache-2.0
LICENSE file, and ``py.typed`` (the package's annotations are for type checkers)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    out, source = tmp_path_factory.mktemp("wheel"), tmp_path_factory.mktemp("source")
    # a copy: setuptools leaves build/ and *.egg-info where it builds
    shutil.copytree(REPO / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copyfile(REPO / name, source / name)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps",
                            "--no-build-isolation", "-q", "-w", str(out), str(source)],
                           capture_output=True, text=True, timeout=300)
    if build.returncode != 0 and "No module named pip" in build.stderr:
        pytest.skip("pip is not installed")
    assert build.returncode == 0, build.stderr
    return zipfile.ZipFile(next(out.glob("nasprune-*.whl")))


def metadata(wheel: zipfile.ZipFile) -> str:
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    return wheel.read(name).decode()


def test_metadata_has_classifiers_and_license_and_no_borrowed_urls(wheel):
    text = metadata(wheel)
    assert "Project-URL" not in text  # none until the project has a public home of its own
    assert "Classifier: Typing :: Typed" in text
    assert "Classifier: Programming Language :: Python :: 3" in text
    assert "License-Expression: Apache-2.0" in text and "License-File: LICENSE" in text
    license_file = next(n for n in wheel.namelist() if n.endswith("licenses/LICENSE"))
    assert "Apache License" in wheel.read(license_file).decode()[:200]


def test_py_typed_is_in_the_package(wheel):
    assert "nasprune/py.typed" in wheel.namelist()
