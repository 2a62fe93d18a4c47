"""Shared pytest fixtures for napari-limnet's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

# torch's first optimizer imports torch._dynamo, which imports triton where it is installed
# (torch's CUDA builds). Triton's native library loaded after Qt and Mesa's llvmpipe (a napari
# viewer under Xvfb) crashes the process: training tests after the widget tests died with a
# segmentation fault on torch 2.14.1. Loaded first, both work; on builds without triton
# (2.13.0+cpu) this only imports torch._dynamo earlier than the first optimizer would.
try:
    import torch._dynamo  # noqa: F401
except Exception:  # noqa: BLE001,S110 - only the load order matters, never a failure here
    pass

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
