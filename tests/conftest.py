"""Shared pytest fixtures for napari-limnet's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

# The real cases live in a folder `shared/data` beside the checkout (not in the repository).
SHARED_DATA = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path of ../shared/data beside the checkout; skips the test when it is absent."""
    if not (SHARED_DATA / "cases.json").is_file():
        pytest.skip(
            f"shared data not found at {SHARED_DATA} (needs ../shared/data beside the repo)"
        )
    return SHARED_DATA


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fuzz-long",
        action="store_true",
        help="run the input fuzz tests (tests/io/test_fuzz_inputs.py) ten times longer",
    )
