"""Data a team already has: a class-per-folder image directory and npz files with their own ids;
bad data refused at `unlearn init` with one line, leaving no workspace behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from components.data import DataError, load_dataset
from components.settings import DataSettings
from pipelines.cli import main
from tests.conftest import ROOT


def _png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def image_folder(root: Path, n: int = 12, size: int = 8) -> Path:
    rng = np.random.default_rng(0)
    for split, count in (("train", n), ("test", n // 2)):
        for cls in ("cat", "dog", "owl"):
            for i in range(count):
                _png(
                    root / split / cls / f"img{i:03d}.png",
                    rng.integers(0, 255, (size, size, 3), dtype=np.uint8),
                )
    return root


def test_imagefolder_ids_are_relative_paths_and_labels_sorted_class_folders(tmp_path):
    ds = load_dataset(
        DataSettings(
            source="imagefolder", root=str(image_folder(tmp_path / "imgs")), heldout_fraction=0.25
        )
    )
    assert ds.class_names == ("cat", "dog", "owl") and ds.train.x.shape[1:] == (3, 8, 8)
    assert "dog/img003.png" in set(ds.train.ids.tolist()) | set(ds.heldout.ids.tolist())
    i = ds.test.index_of()["owl/img001.png"]
    assert ds.test.y[i] == 2 and len(ds.test) == 18


def test_heldout_from_test_divides_the_test_split_once(tmp_path):
    ds = load_dataset(
        DataSettings(
            source="imagefolder",
            root=str(image_folder(tmp_path / "imgs")),
            heldout_from="test",
            heldout_fraction=0.5,
        )
    )
    assert len(ds.train) == 36 and len(ds.heldout) == 9 and len(ds.test) == 9
    assert dict(ds.origins)["heldout"] == "test-files"
    assert not set(ds.heldout.ids.tolist()) & set(ds.test.ids.tolist())


def _init(tmp_path, capsys, data: dict):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"] = data
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params))
    code = main(["init", str(tmp_path / "ws"), "--params", str(p)])
    return code, capsys.readouterr()


def test_imagefolder_workspace_snapshot_holds_one_file_per_sample(tmp_path, capsys):
    code, cap = _init(
        tmp_path, capsys, {"source": "imagefolder", "root": str(image_folder(tmp_path / "imgs"))}
    )
    assert code == 0, cap.err
    files = sorted(
        p.relative_to(tmp_path / "ws" / "data" / "raw").as_posix()
        for p in (tmp_path / "ws" / "data" / "raw").rglob("*.npy")
    )
    assert len(files) == 54 and "test/1/dog/img000.png.npy" in files
    from pipelines.snapshot import read_state
    from pipelines.workspace import Workspace

    state = read_state(
        Workspace(tmp_path / "ws"), "HEAD"
    )  # ids with a folder in them read back whole
    assert "dog/img000.png" in set(state.test.ids.tolist()) and state.test.x.shape[1:] == (3, 8, 8)
    i = state.test.index_of()["owl/img001.png"]
    assert state.test.y[i] == 2


def _bad_folder(tmp: Path, kind: str) -> Path:
    root = image_folder(tmp / "imgs", n=4)
    if kind == "shape":
        _png(root / "train" / "dog" / "big.png", np.zeros((9, 8, 3), dtype=np.uint8))
    else:
        (root / "train" / "owl" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root


@pytest.mark.parametrize(
    "kind, needle",
    [
        ("shape", "big.png: image is 8x9x3, the others 8x8x3"),
        ("unreadable", "broken.png: unreadable image"),
    ],
)
def test_bad_image_folder_is_one_line_and_leaves_nothing(tmp_path, capsys, kind, needle):
    code, cap = _init(
        tmp_path, capsys, {"source": "imagefolder", "root": str(_bad_folder(tmp_path, kind))}
    )
    assert (
        code == 2
        and cap.err.startswith("error: ")
        and needle in cap.err
        and len(cap.err.strip().splitlines()) == 1
    )
    assert not (tmp_path / "ws").exists()


@pytest.mark.parametrize(
    "ids, y, needle",
    [
        (["a", "b", "a", "c"], [0, 1, 0, 1], "duplicate sample id 'a'"),
        (["a", "b", "../x", "c"], [0, 1, 0, 1], "sample id '../x' is not usable"),
        (["a", "b", "c", "d"], [0, -1, 0, 1], "labels must be non-negative integers"),
    ],
)
def test_bad_npz_is_one_line_and_leaves_nothing(tmp_path, capsys, ids, y, needle):
    d = tmp_path / "npz"
    d.mkdir()
    x = np.zeros((4, 6, 6), dtype=np.uint8)
    np.savez(d / "train.npz", x=x, y=np.array(y), ids=np.array(ids))
    np.savez(d / "test.npz", x=x, y=np.array([0, 1, 0, 1]), ids=np.array(["t1", "t2", "t3", "t4"]))
    code, cap = _init(tmp_path, capsys, {"source": "npz", "root": str(d), "id_key": "ids"})
    assert (
        code == 2
        and cap.err.startswith("error: ")
        and needle in cap.err
        and len(cap.err.strip().splitlines()) == 1
    )
    assert not (tmp_path / "ws").exists()


def test_npz_without_the_named_id_array_is_refused(tmp_path):
    d = tmp_path / "npz"
    d.mkdir()
    np.savez(d / "train.npz", x=np.zeros((4, 6, 6), dtype=np.uint8), y=np.arange(4) % 2)
    with pytest.raises(DataError, match=r"needs the arrays \['x', 'y', 'names'\]"):
        load_dataset(DataSettings(source="npz", root=str(d), id_key="names"))
