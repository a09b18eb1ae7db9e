import numpy as np
import pytest

from components.data import Split
from components.forget import (
    ForgetSetError,
    ForgetSplit,
    extract_forget_set,
    forget_manifest,
    manifest_sha256,
)


def _split(n=20):
    x = np.arange(n * 4, dtype=np.uint8).reshape(n, 1, 2, 2)
    return Split(x, np.arange(n) % 3, np.array([f"s{i:03d}" for i in range(n)]))


def test_extract_is_disjoint_and_complete():
    s = _split()
    fs = extract_forget_set(s, {"s001", "s005"})
    assert sorted(fs.forget.ids.tolist()) == ["s001", "s005"]
    assert len(fs.retain) == 18 and not set(fs.retain.ids) & set(fs.forget.ids)


def test_overlapping_split_is_refused():
    s = _split()
    with pytest.raises(ForgetSetError, match="share"):
        ForgetSplit(forget=s.take(np.array([0, 1])), retain=s.take(np.array([1, 2])))


@pytest.mark.parametrize(
    "ids, message",
    [
        (set(), "empty"),
        ({"nope"}, "not in the training snapshot"),
        ({f"s{i:03d}" for i in range(20)}, "whole training set"),
        ({f"s{i:03d}" for i in range(15)}, "max_forget_fraction"),
    ],
)
def test_bad_forget_sets(ids, message):
    with pytest.raises(ForgetSetError, match=message):
        extract_forget_set(_split(), ids, max_fraction=0.5)


def test_manifest_is_canonical_and_sensitive_to_content():
    s = _split()
    a = forget_manifest(extract_forget_set(s, {"s002", "s001"}).forget)
    b = forget_manifest(extract_forget_set(s, {"s001", "s002"}).forget)
    assert a == b and [e["id"] for e in a["samples"]] == ["s001", "s002"]
    x = s.x.copy()
    x[1, 0, 0, 0] += 1
    c = forget_manifest(extract_forget_set(Split(x, s.y, s.ids), {"s001", "s002"}).forget)
    assert manifest_sha256(c) != manifest_sha256(a)
