"""A seeded mutation loop over the readers, the prompts JSON and the Session API.

Every input either works or is refused with a ValueError that names the file (readers,
prompts) or says what is wrong (Session); nothing else may escape, nothing may hang. The
default run takes well under a minute; ``--fuzz-long`` (see ``conftest.py``) runs ten
times as many mutations.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import tifffile

from napari_limnet.commands.segment import load_prompts
from napari_limnet.engine.session import Session
from napari_limnet.io import load_volume


@pytest.fixture()
def rounds(request) -> int:
    return 10 if request.config.getoption("--fuzz-long") else 1


def _mutate(raw: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(raw)
    kind = rng.integers(4)
    if kind == 0:  # bit flips
        for _ in range(int(rng.integers(1, 4))):
            i = int(rng.integers(len(b)))
            b[i] ^= 1 << int(rng.integers(8))
    elif kind == 1:  # truncation
        b = b[: int(rng.integers(1, len(b)))]
    elif kind == 2:  # a random run of bytes overwritten (often the header)
        i = int(rng.integers(min(len(b), 400)))
        n = int(rng.integers(1, 16))
        b[i : i + n] = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    else:  # bytes inserted
        i = int(rng.integers(len(b)))
        b[i:i] = rng.integers(0, 256, int(rng.integers(1, 32)), dtype=np.uint8).tobytes()
    return bytes(b)


def _sources(tmp_path: Path) -> dict[str, bytes]:
    data = np.random.default_rng(0).integers(-100, 300, (6, 12, 10)).astype(np.int16)
    out = {}
    for name in ("v.nii", "v.nii.gz"):
        p = tmp_path / f"src_{name}"
        nib.save(nib.Nifti1Image(data, np.diag([0.7, 0.7, 2.0, 1.0])), p)
        out[name] = p.read_bytes()
    p = tmp_path / "src.tif"
    tifffile.imwrite(p, data.astype(np.uint16), imagej=True, metadata={"spacing": 2.0})
    out["v.tif"] = p.read_bytes()
    return out


def test_readers_under_mutation(tmp_path: Path, rounds: int) -> None:
    rng = np.random.default_rng(1234)
    sources = _sources(tmp_path)
    for i in range(2000 * rounds):
        name = list(sources)[i % len(sources)]
        p = tmp_path / f"m{i}_{name}"
        p.write_bytes(_mutate(sources[name], rng))
        try:
            vol = load_volume(p)
        except ValueError as exc:
            assert str(p) in str(exc), f"the error does not name the file: {exc}"
            continue
        finally:
            p.unlink()
        assert vol.data.ndim == 3 and vol.data.size > 0
        assert all(np.isfinite(s) and s > 0 for s in vol.spacing)
        if vol.data.dtype.kind == "f":
            assert np.isfinite(vol.data).any()


def test_gzip_of_garbage(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    for i in range(20):
        p = tmp_path / f"g{i}.nii.gz"
        p.write_bytes(
            gzip.compress(rng.integers(0, 256, int(rng.integers(1, 600)), np.uint8).tobytes())
        )
        with pytest.raises(ValueError, match=str(p)):
            load_volume(p)


def _random_json(rng: np.random.Generator, depth: int = 0):
    k = rng.integers(8 if depth < 4 else 5)
    if k == 0:
        return None
    if k == 1:
        return bool(rng.integers(2))
    if k == 2:
        return int(rng.integers(-(2**40), 2**40))
    if k == 3:
        return float(rng.normal() * 10 ** rng.integers(0, 300))
    if k == 4:
        return "x" * int(rng.integers(3))
    if k == 5:
        return [_random_json(rng, depth + 1) for _ in range(int(rng.integers(3)))]
    keys = ["objects", "rounds", "clicks", "boxes", "z", "y", "x", "label", "positive", "y0"]
    return {
        keys[int(rng.integers(len(keys)))]: _random_json(rng, depth + 1)
        for _ in range(int(rng.integers(4)))
    }


def test_prompts_json_under_mutation(tmp_path: Path, rounds: int) -> None:
    rng = np.random.default_rng(99)
    good = {"objects": [{"rounds": [{"clicks": [{"z": 1, "y": 2, "x": 3}]}]}]}
    p = tmp_path / "prompts.json"
    for _ in range(3000 * rounds):
        doc = _random_json(rng) if rng.random() < 0.5 else json.loads(json.dumps(good))
        if isinstance(doc, dict) and rng.random() < 0.7:  # mutate one leaf of the good file
            doc = good | {"objects": [{"rounds": [{"clicks": [{"z": _random_json(rng)}]}]}]}
        p.write_text(json.dumps(doc))
        try:
            load_prompts(p)
        except ValueError as exc:
            assert str(p) in str(exc)


def test_session_api_under_random_prompts(rounds: int) -> None:
    rng = np.random.default_rng(7)
    s = Session(np.zeros((5, 9, 8), np.float32), spacing=(2.0, 1.0, 1.0), model=object())
    obj = s.new_object()
    junk = [None, "a", float("nan"), float("inf"), -1, 10**20, 2.5, True, [], [1, 2], {}]
    for _ in range(3000 * rounds):
        call = rng.integers(5)
        args = [junk[int(rng.integers(len(junk)))] for _ in range(4)]
        try:
            if call == 0:
                s.add_click(obj, args[:3], positive=bool(rng.integers(2)))
            elif call == 1:
                s.add_box(obj, args[0], args[:4])
            elif call == 2:
                s.add_scribble(obj, [args[:3], args[1:4]])
            elif call == 3:
                s.add_lasso(obj, [args[:3], args[1:4], args[:3]])
            else:
                s.remove_prompt(obj, args[0])
        except ValueError:
            continue
    for p in s.prompts(obj):
        assert 0 <= p.z < 5
