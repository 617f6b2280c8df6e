"""Shared test fixtures: the publisher's golden files and small models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = Path(os.environ.get("TRIMODE_FIXTURES", REPO.parent / "shared" / "fixtures"))
NLD_TINY = FIXTURES / "nld-tiny"


def _require(path: Path) -> Path:
    if not path.exists():
        raise FileNotFoundError(
            f"golden fixtures not found at {path}: clone the repository with ../shared beside it "
            "or set TRIMODE_FIXTURES"
        )
    return path


@pytest.fixture(scope="session")
def nld_tiny_dir() -> Path:
    return _require(NLD_TINY)


@pytest.fixture(scope="session")
def golden(nld_tiny_dir: Path) -> dict:
    return json.loads((nld_tiny_dir / "golden.json").read_text())


@pytest.fixture(scope="session")
def nld_tiny(nld_tiny_dir: Path):
    from trimode.model import load

    return load(nld_tiny_dir)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
