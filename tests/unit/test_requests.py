import numpy as np
import pytest

from components.data import Split
from components.requests import RequestError, parse_request, resolve


def _train():
    n = 30
    return Split(
        np.zeros((n, 1, 2, 2), np.uint8),
        np.arange(n) % 3,
        np.array([f"t{i:02d}" for i in range(n)]),
    )


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"kind": "samples"}, "needs its target"),
        ({"kind": "samples", "sample_ids": [" ", ""]}, "needs its target"),
        ({"kind": "class"}, "needs its target"),
        ({"kind": "class", "class_label": -1}, "class_label"),
        ({"kind": "class", "class_label": 1, "sample_ids": ["t01"]}, "cannot also name"),
        ({"kind": "teleport", "sample_ids": ["t01"]}, "kind"),
        ({"kind": "samples", "sample_ids": ["t01"], "extra": 1}, "extra"),
    ],
)
def test_malformed_requests_are_refused_with_one_line(raw, message):
    with pytest.raises(RequestError, match=message) as e:
        parse_request(raw)
    assert "\n" not in str(e.value)


def test_dedup_key_ignores_order_and_whitespace():
    a = parse_request({"kind": "samples", "sample_ids": ["t02", "t01"]})
    b = parse_request({"kind": "samples", "sample_ids": [" t01", "t02", "t01"]})
    assert a.dedup_key() == b.dedup_key()
    assert a.dedup_key() != parse_request({"kind": "samples", "sample_ids": ["t01"]}).dedup_key()


def test_resolve_each_kind():
    tr = _train()
    assert resolve(parse_request({"kind": "class", "class_label": 1}), tr, 3, {}, {}) == [
        f"t{i:02d}" for i in range(1, 30, 3)
    ]
    assert resolve(
        parse_request({"kind": "subject", "subject_id": "alice"}),
        tr,
        3,
        {"alice": ["t03", "t04"]},
        {},
    ) == ["t03", "t04"]
    assert resolve(parse_request({"kind": "samples", "sample_ids": ["t05"]}), tr, 3, {}, {}) == [
        "t05"
    ]


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"kind": "samples", "sample_ids": ["t01", "zz"]}, "unknown sample id 'zz'"),
        ({"kind": "class", "class_label": 7}, "unknown class 7"),
        ({"kind": "subject", "subject_id": "bob"}, "unknown subject"),
        ({"kind": "samples", "sample_ids": [f"t{i:02d}" for i in range(30)]}, "whole training set"),
    ],
)
def test_resolve_errors(raw, message):
    with pytest.raises(RequestError, match=message):
        resolve(parse_request(raw), _train(), 3, {"alice": ["t01"]}, {})


def test_already_erased_sample_and_forgotten_class_are_refused():
    tr = _train()
    with pytest.raises(RequestError, match="already erased by batch b1"):
        resolve(parse_request({"kind": "samples", "sample_ids": ["x"]}), tr, 3, {}, {"x": "b1"})
    with pytest.raises(RequestError, match="already forgotten"):
        resolve(parse_request({"kind": "class", "class_label": 2}), tr, 3, {}, {}, {2})


def test_subject_ids_frozen_at_intake_win_over_the_mapping():
    req = parse_request({"kind": "subject", "subject_id": "alice", "sample_ids": ["t07"]})
    assert resolve(req, _train(), 3, {"alice": ["t01", "t02"]}, {}) == ["t07"]
