import numpy as np
import pytest

from components.data import DataError, dataset_hash, load_dataset, sample_hash, split_hashes
from components.settings import DataSettings
from tests.conftest import SHARED


def test_digits_ids_are_stable_and_splits_disjoint(digits):
    again = load_dataset(DataSettings())
    assert (again.train.ids == digits.train.ids).all()
    ids = [set(s.ids.tolist()) for s in (digits.train, digits.heldout, digits.test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert sum(map(len, ids)) == 1797
    assert digits.train.x.dtype == np.uint8 and digits.train.x.shape[1:] == (1, 8, 8)


def test_heldout_split_is_class_stratified(digits):
    counts = np.bincount(digits.heldout.y, minlength=10)
    assert counts.min() >= 0.8 * counts.max()


def test_sample_hash_depends_on_pixels_and_label(digits):
    x, y = digits.train.x[0], int(digits.train.y[0])
    h = sample_hash(x, y)
    x2 = x.copy()
    x2[0, 0, 0] ^= 1
    assert sample_hash(x2, y) != h
    assert sample_hash(x, (y + 1) % 10) != h
    assert sample_hash(x.copy(), y) == h


def test_dataset_hash_is_order_independent(digits):
    perm = np.random.default_rng(0).permutation(len(digits.train))
    assert dataset_hash(digits.train.take(perm)) == dataset_hash(digits.train)
    assert dataset_hash(digits.train.take(perm[:-1])) != dataset_hash(digits.train)


def test_npz_source_reads_nhwc_and_official_test_split(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "train.npz",
        x=rng.integers(0, 255, (50, 6, 6, 3), dtype=np.uint8),
        y=np.arange(50) % 5,
    )
    np.savez(
        tmp_path / "test.npz",
        x=rng.integers(0, 255, (20, 6, 6, 3), dtype=np.uint8),
        y=np.arange(20) % 5,
    )
    ds = load_dataset(DataSettings(source="npz", root=str(tmp_path), heldout_fraction=0.2))
    assert ds.train.x.shape[1:] == (3, 6, 6)
    assert len(ds.test) == 20 and len(ds.train) + len(ds.heldout) == 50
    assert ds.num_classes == 5


def test_npz_source_missing_files_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no train.npz"):
        load_dataset(DataSettings(source="npz", root=str(tmp_path)))


def test_torchvision_source_without_local_copy_refuses_to_download(tmp_path):
    with pytest.raises(DataError, match="download"):
        load_dataset(DataSettings(source="fashion_mnist", root=str(tmp_path)))


@pytest.mark.skipif(
    not (SHARED / "datasets" / "fashion_mnist" / "test.npz").exists(),
    reason="../shared datasets absent",
)
def test_real_fashion_mnist_npz_loads_with_stable_hashes():
    ds = load_dataset(
        DataSettings(
            source="npz", root=str(SHARED / "datasets" / "fashion_mnist"), heldout_fraction=0.1
        )
    )
    assert len(ds.test) == 10000 and len(ds.train) + len(ds.heldout) == 60000
    assert ds.train.x.shape[1:] == (1, 28, 28) and ds.num_classes == 10
    assert np.bincount(ds.test.y).tolist() == [1000] * 10
    hashes = split_hashes(ds.test.take(np.arange(200)))
    assert len(set(hashes)) == 200  # distinct images hash apart
