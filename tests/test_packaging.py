"""pyproject.toml's version ranges are the tested ones: the installed (CI) versions satisfy them, and
the core ranges admit no release the project was not tested with."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
# Extras whose packages need hardware this machine does not have.
UNTESTED_HERE = {"gpu"}


def _requirements() -> list[Requirement]:
    extras = PYPROJECT["optional-dependencies"]
    lines = PYPROJECT["dependencies"] + [
        line for extra, reqs in extras.items() if extra not in UNTESTED_HERE for line in reqs
    ]
    return [Requirement(line) for line in lines]


@pytest.mark.parametrize("requirement", _requirements(), ids=str)
def test_the_installed_version_is_in_range(requirement):
    try:
        installed = version(requirement.name)
    except PackageNotFoundError:
        pytest.skip(f"{requirement.name} is not installed")
    assert requirement.specifier.contains(installed, prereleases=True), (
        f"pyproject.toml: {requirement} does not admit the installed {requirement.name} {installed}"
    )


@pytest.mark.parametrize(
    ("name", "tested", "untested"),
    [
        ("torch", ["2.13.0", "2.14.1"], ["2.12.1", "2.15.0"]),
        ("transformers", ["5.23.0", "5.24.0", "5.25.0"], ["5.22.0", "5.26.0"]),
    ],
)
def test_core_ranges_are_the_tested_releases(name, tested, untested):
    (requirement,) = [r for r in map(Requirement, PYPROJECT["dependencies"]) if r.name == name]
    assert all(requirement.specifier.contains(v) for v in tested), requirement
    assert not any(requirement.specifier.contains(v) for v in untested), requirement
