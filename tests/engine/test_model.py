"""The shipped weights: size, checksum, clear errors for bad files, save/load round trip."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import napari_limnet
from napari_limnet.engine import model as model_mod
from napari_limnet.engine.networks import CROP, IMG_CH, LimNet, count_parameters
from napari_limnet.engine.predict import Propagator, norm_of_mask

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def shipped():
    return napari_limnet.load_model(device="cpu")


def _sample_outputs(net: LimNet) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    img = torch.randn(1, IMG_CH, CROP, CROP, generator=g)
    nbs = torch.randn(1, 2 * net.interaction.context_slices * IMG_CH, CROP, CROP, generator=g)
    x = torch.cat([img, torch.rand(1, 4, CROP, CROP, generator=g), nbs], 1)
    m = (torch.rand(1, 1, CROP, CROP, generator=g) > 0.5).float()
    with torch.inference_mode():
        key, skips = net.memory.encode_key(img)
        return [net.interaction(x), key, net.scorer(img, m, 1 - m)]


def test_shipped_weights_load(shipped) -> None:
    assert isinstance(shipped, model_mod.LimNetModel)
    assert shipped.device == torch.device("cpu")
    assert not shipped.net.training
    assert 0.0 < shipped.fusion_threshold <= 1.0
    for t in _sample_outputs(shipped.net):
        assert torch.isfinite(t).all()


def test_propagation_reports_its_confidence(shipped) -> None:
    yy, xx = np.mgrid[:96, :96]
    disk = (yy - 48) ** 2 + (xx - 48) ** 2 <= 15**2
    image = np.where(disk, 200.0, 0.0).astype(np.float32)
    prop = Propagator(shipped, (1.0, 1.0), norm_of_mask(image, disk, (1.0, 1.0)))
    assert prop.confidence == 0.0  # no step yet
    with torch.inference_mode():
        prop.remember(image, disk, pinned=True)
        mask = prop.step(image, disk)  # the same slice again: the network is sure of it
    assert mask[48, 48]
    assert 0.5 < prop.confidence <= 1.0


def test_parameter_budget(shipped) -> None:
    n = count_parameters(shipped.net)
    assert 0 < n <= 5_000_000, f"{n} parameters"
    assert n == count_parameters(LimNet(shipped.meta.get("interaction_context", 0)))


def test_shipped_checksum_file_matches() -> None:
    path = model_mod.default_weights_path()
    check = Path(str(path) + ".sha256")
    assert path.is_file() and check.is_file()
    assert check.read_text().split()[0] == model_mod.sha256(path)


@pytest.fixture
def copy_of_shipped(tmp_path: Path) -> Path:
    src = model_mod.default_weights_path()
    dst = tmp_path / "w.pt"
    shutil.copy(src, dst)
    shutil.copy(str(src) + ".sha256", str(dst) + ".sha256")
    return dst


def test_copy_with_checksum_loads(copy_of_shipped: Path) -> None:
    m = model_mod.load_model(copy_of_shipped, device="cpu")
    assert m.meta["name"] == "w.pt"


def test_corrupted_copy_is_refused(copy_of_shipped: Path) -> None:
    data = bytearray(copy_of_shipped.read_bytes())
    mid = len(data) // 2
    for i in range(mid, mid + 16):
        data[i] ^= 0xFF
    copy_of_shipped.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="checksum"):
        model_mod.load_model(copy_of_shipped, device="cpu")


def test_truncated_copy_without_checksum_is_refused(copy_of_shipped: Path) -> None:
    Path(str(copy_of_shipped) + ".sha256").unlink()
    data = copy_of_shipped.read_bytes()
    copy_of_shipped.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="not a readable LIM-Net weights file"):
        model_mod.load_model(copy_of_shipped, device="cpu")


def test_foreign_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "foreign.pt"
    torch.save({"state_dict": LimNet().state_dict(), "epoch": 3}, path)
    Path(str(path) + ".sha256").write_text(model_mod.sha256(path) + "\n")
    with pytest.raises(ValueError, match="not a LIM-Net weights file"):
        model_mod.load_model(path, device="cpu")


def test_text_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.pt"
    path.write_text("these are not weights\n")
    with pytest.raises(ValueError, match="LIM-Net weights"):
        model_mod.load_model(path, device="cpu")


def test_wrong_architecture_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    state = {k: v for k, v in LimNet().state_dict().items() if not k.startswith("scorer.")}
    torch.save({"format": model_mod.FORMAT, "state_dict": state, "meta": {}}, path)
    with pytest.raises(ValueError, match="does not fit"):
        model_mod.load_model(path, device="cpu")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        model_mod.load_model(tmp_path / "nope.pt", device="cpu")


def test_save_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = LimNet().eval()
    path = model_mod.save_weights(net, tmp_path / "sub" / "rt.pt", {"note": "test"})
    assert Path(str(path) + ".sha256").read_text().strip() == model_mod.sha256(path)
    loaded = model_mod.load_model(path, device="cpu")
    assert loaded.meta["note"] == "test"
    # saved in float16: a second save of the loaded net gives the very same tensors and outputs
    path2 = model_mod.save_weights(loaded.net, tmp_path / "rt2.pt")
    again = model_mod.load_model(path2, device="cpu")
    for a, b in zip(_sample_outputs(loaded.net), _sample_outputs(again.net), strict=True):
        assert torch.equal(a, b)
    # and the first load is the original up to float16 rounding
    sa, sb = net.state_dict(), loaded.net.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        if sa[k].is_floating_point():
            assert sb[k].dtype == torch.float32
            torch.testing.assert_close(sb[k], sa[k].half().float())
        else:
            assert torch.equal(sa[k], sb[k])


def test_pick_device() -> None:
    assert model_mod.pick_device("cpu") == torch.device("cpu")
    assert model_mod.pick_device(torch.device("cpu")) == torch.device("cpu")
    assert model_mod.pick_device(None).type in ("cpu", "cuda", "mps")
