"""`scripts/train_gpu_variants.sh`: one-stage configs trained side by side, each exported
with the shipped weights' other networks (run here on the CPU, one step each)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from napari_limnet.engine.model import load_model

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "train_gpu_variants.sh"


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_variants_are_trained_and_exported(tmp_path: Path) -> None:
    cfg_dir = tmp_path / "configs"
    cfg_dir.mkdir()
    for name, extra in (("a_plain", {}), ("b_realprev", {"realistic_prev": 0.5})):
        stage = {"steps": 1, "batch": 2, "real_fraction": 0.0, **extra}
        cfg = {"out": str(tmp_path / "runs" / name), "seed": 0, "device": "cpu", "threads": 1}
        cfg["stages"] = {"interaction": stage}
        (cfg_dir / f"{name}.json").write_text(json.dumps(cfg))
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable)
    res = subprocess.run(
        ["bash", str(SCRIPT), str(cfg_dir), "", str(out), "300"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert (out / "logs.tgz").is_file()
    shipped = load_model(None, device="cpu").net.state_dict()
    for name in ("a_plain", "b_realprev"):
        model = load_model(out / f"{name}.pt", device="cpu")
        assert model.meta["config"] == name
        sd = model.net.state_dict()
        inter = [k for k in sd if k.startswith("interaction.")]
        mem = [k for k in sd if k.startswith("memory.")]
        assert inter and mem
        # the trained network replaced the shipped one(s); the others are the shipped ones
        assert any(k not in shipped or not torch.equal(sd[k], shipped[k]) for k in inter)
        assert all(torch.equal(sd[k], shipped[k]) for k in mem)
