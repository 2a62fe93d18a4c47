"""Every user error of the command line: exit 2 and one line naming the file and the problem,
before any segmentation runs (the real CLI entry point, no stand-ins)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from napari_limnet import cli
from napari_limnet.engine import model as model_mod
from napari_limnet.engine import session as session_mod


@pytest.fixture()
def ct(tmp_path: Path) -> Path:
    p = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((12, 10, 6), np.int16), np.eye(4)), p)
    return p


@pytest.fixture()
def no_rounds(monkeypatch):
    """Fails the test if a segmentation round starts: errors must come first."""

    def forbidden(*a, **k):
        raise AssertionError("a round ran before the error was found")

    monkeypatch.setattr(session_mod.rounds, "run_round", forbidden)


def _prompts(tmp_path: Path, doc) -> Path:
    p = tmp_path / "prompts.json"
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return p


def _run(capsys, argv) -> tuple[int, str]:
    rc = cli.main(argv)
    err = capsys.readouterr().err.strip()
    return rc, err


ONE = {"objects": [{"clicks": [{"z": 1, "y": 2, "x": 3}]}]}


@pytest.mark.parametrize(
    "doc,message",
    [
        ({"objects": [{"rounds": [{"clicks": 5}]}]}, "'clicks' must be a list"),
        ({"objects": [{"rounds": [{"clicks": None}]}]}, "'clicks' must be a list"),
        ({"objects": [{"clicks": [{"z": 1, "y": 2, "x": 3}], "label": 2**31}]}, "'label'"),
        ("[" * 100000 + "]" * 100000, "nested too deeply"),
        (b"\xff\xfe".decode("latin-1"), "not a readable JSON"),
    ],
)
def test_malformed_prompts(tmp_path, capsys, ct, no_rounds, doc, message):
    p = _prompts(tmp_path, doc)
    rc, err = _run(
        capsys, ["segment", str(ct), "--prompts", str(p), "-o", str(tmp_path / "o.nii.gz")]
    )
    assert rc == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert message in err and "prompts.json" in err


def test_unsupported_output_suffix_refused_first(tmp_path, capsys, ct, no_rounds):
    p = _prompts(tmp_path, ONE)
    rc, err = _run(
        capsys, ["segment", str(ct), "--prompts", str(p), "-o", str(tmp_path / "o.png")]
    )
    assert rc == 2 and "o.png: unsupported label file type" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_read_only_output_folder_refused_first(tmp_path, capsys, ct, no_rounds):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    p = _prompts(tmp_path, ONE)
    rc, err = _run(capsys, ["segment", str(ct), "--prompts", str(p), "-o", str(ro / "o.nii.gz")])
    ro.chmod(0o700)
    assert rc == 2 and "cannot write there" in err


def test_output_probe_failure_refused_first(tmp_path, capsys, ct, no_rounds, monkeypatch):
    """A full or read-only file system (the probe write fails): exit 2 before segmenting."""
    real = Path.write_bytes

    def full(self, data):
        if ".limnet-probe-" in self.name:
            raise OSError(28, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    p = _prompts(tmp_path, ONE)
    rc, err = _run(
        capsys, ["segment", str(ct), "--prompts", str(p), "-o", str(tmp_path / "o.nii.gz")]
    )
    assert rc == 2 and "No space left on device" in err


def test_bogus_device(tmp_path, capsys, ct, no_rounds):
    p = _prompts(tmp_path, ONE)
    argv = ["segment", str(ct), "--prompts", str(p), "-o", str(tmp_path / "o.nii.gz")]
    rc, err = _run(capsys, [*argv, "--device", "bogus"])
    assert rc == 2 and "unknown device 'bogus'" in err


def _weights(tmp_path: Path, edit) -> Path:
    saved = torch.load(model_mod.default_weights_path(), map_location="cpu", weights_only=True)
    edit(saved)
    p = tmp_path / "w.pt"
    torch.save(saved, p)
    return p


def _nan_first(saved):
    k = next(iter(saved["state_dict"]))
    saved["state_dict"][k] = torch.full_like(saved["state_dict"][k], float("nan"))


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda s: s.__setitem__("meta", ["a", "list"]), "metadata is a list"),
        (lambda s: s.__setitem__("meta", "text"), "metadata is a str"),
        (lambda s: s["meta"].__setitem__("fusion_threshold", "high"), "fusion_threshold"),
        (lambda s: s["state_dict"].__setitem__("x", "text"), "not a mapping of tensors"),
        (_nan_first, "NaN or infinite"),
    ],
)
def test_malformed_weights(tmp_path, capsys, ct, no_rounds, edit, message):
    w = _weights(tmp_path, edit)
    p = _prompts(tmp_path, ONE)
    argv = ["segment", str(ct), "--prompts", str(p), "-o", str(tmp_path / "o.nii.gz")]
    with pytest.warns(UserWarning, match="not checked"):
        rc, err = _run(capsys, [*argv, "--weights", str(w)])
    assert rc == 2 and message in err and "w.pt" in err
    assert len(err.splitlines()) == 1
