"""Forget-set extraction: Df and Dr as disjoint splits of D, and the canonical forget manifest."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from components.canonical import canonical_json, sha256_hex
from components.data import Split, split_hashes

# The one definition of the forget manifest: {"schema", "count", "samples": [{"id", "sha256"}]},
# samples sorted by id, each hash over the sample's pixels and label (components.data.split_hashes).
MANIFEST_SCHEMA = "unlearn.forget-manifest/1"


class ForgetSetError(ValueError):
    """The requested forget set is not a proper, non-empty subset of the training data."""


@dataclass(frozen=True)
class ForgetSplit:
    """Df (forget) and Dr (retain): disjoint by id, together exactly the training split."""

    forget: Split
    retain: Split

    def __post_init__(self) -> None:
        overlap = set(self.forget.ids.tolist()) & set(self.retain.ids.tolist())
        if overlap:
            raise ForgetSetError(
                f"forget and retain sets share {len(overlap)} ids, e.g. {sorted(overlap)[0]}"
            )


def extract_forget_set(
    train: Split, forget_ids: set[str], max_fraction: float = 0.5
) -> ForgetSplit:
    """Split D into (Df, Dr) by sample id.

    Raises ForgetSetError for ids not in D, an empty set, or a set above `max_fraction` of D
    (at that size retraining from scratch is the honest option, and Dr could not anchor the model).
    """
    if not forget_ids:
        raise ForgetSetError("the forget set is empty")
    known = set(train.ids.tolist())
    unknown = sorted(forget_ids - known)
    if unknown:
        raise ForgetSetError(
            f"{len(unknown)} ids are not in the training snapshot, e.g. {unknown[0]!r}"
        )
    mask = np.isin(train.ids, np.array(sorted(forget_ids)))
    if mask.all():
        raise ForgetSetError(
            "the forget set covers the whole training set: nothing would remain to retain; retrain "
            "instead"
        )
    if mask.mean() > max_fraction:
        raise ForgetSetError(
            f"the forget set is {mask.mean():.0%} of the training set (limit "
            f"requests.max_forget_fraction={max_fraction:.0%}); retrain instead"
        )
    return ForgetSplit(forget=train.take(mask), retain=train.take(~mask))


def forget_manifest(forget: Split) -> dict:
    """Sorted sample ids with per-sample content hashes (never the raw data)."""
    pairs = sorted(zip(forget.ids.tolist(), split_hashes(forget), strict=True))
    return {
        "schema": MANIFEST_SCHEMA,
        "count": len(pairs),
        "samples": [{"id": i, "sha256": h} for i, h in pairs],
    }


def removed_ids(before: np.ndarray, after: np.ndarray) -> set[str]:
    """Ids in the `before` listing missing from `after`: the samples a snapshot erased."""
    return set(before.tolist()) - set(after.tolist())


def manifest_sha256(manifest: dict) -> str:
    return sha256_hex(canonical_json(manifest))
