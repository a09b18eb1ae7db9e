"""Deletion requests: the typed schema, validation against a snapshot, resolution to sample ids."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from components.canonical import canonical_json, sha256_hex
from components.data import Split

RequestKind = Literal["samples", "class", "subject"]


class RequestError(ValueError):
    """A request is malformed or does not fit the data snapshot; nothing is stored."""


class ForgetRequest(BaseModel):
    """One deletion request: erase samples by id, a whole class, or everything of a subject."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: RequestKind
    sample_ids: tuple[str, ...] = ()
    class_label: int | None = Field(None, ge=0)
    subject_id: str | None = Field(None, min_length=1, max_length=200)

    @field_validator("sample_ids")
    @classmethod
    def _clean_ids(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        ids = tuple(sorted({s.strip() for s in v if s.strip()}))
        return ids

    @model_validator(mode="after")
    def _one_target(self) -> ForgetRequest:
        given = {
            "samples": bool(self.sample_ids),
            "class": self.class_label is not None,
            "subject": self.subject_id is not None,
        }
        if not given[self.kind]:
            target = {"samples": "sample ids", "class": "a class label", "subject": "a subject id"}
            raise ValueError(f"a {self.kind!r} request needs its target ({target[self.kind]})")
        # A subject request may carry the sample ids it resolved to at intake (frozen there).
        extra = [
            k
            for k, v in given.items()
            if v and k != self.kind and not (self.kind == "subject" and k == "samples")
        ]
        if extra:
            raise ValueError(f"a {self.kind!r} request cannot also name {', '.join(extra)}")
        return self

    @property
    def scenario(self) -> str:
        return "class" if self.kind == "class" else "sample"

    def dedup_key(self) -> str:
        """Same kind and same target -> same key, whatever the order or spacing of the ids."""
        return sha256_hex(canonical_json(self.model_dump(mode="json")))


def parse_request(raw: dict) -> ForgetRequest:
    """Validate a raw request; RequestError carries one line naming the bad field."""
    try:
        return ForgetRequest.model_validate(raw)
    except ValidationError as err:
        e = err.errors()[0]
        where = ".".join(str(p) for p in e["loc"])
        raise RequestError(
            "invalid request: "
            f"{where + ': ' if where else ''}{e['msg'].removeprefix('Value error, ')}"
        ) from None


def resolve(
    req: ForgetRequest,
    train: Split,
    num_classes: int,
    subjects: dict[str, list[str]],
    erased: dict[str, str],
    forgotten_classes: set[int] = frozenset(),
    known: set[str] | None = None,
) -> list[str]:
    """Sample ids of the training snapshot that the request erases.

    Args:
        train: the current training snapshot (already without erased samples).
        subjects: subject id -> sample ids mapping.
        erased: sample id -> batch id, for samples erased by an earlier batch (tombstones).
        known: set(train.ids), when the caller resolves many requests against one snapshot.
    Raises:
        RequestError: unknown or already erased ids, an unknown class, an unknown subject, or a
        request that would erase the whole training set.
    """
    known = set(train.ids.tolist()) if known is None else known
    if req.kind == "class":
        c = int(req.class_label)  # type: ignore[arg-type]
        if c >= num_classes:
            raise RequestError(f"unknown class {c}: the dataset has classes 0..{num_classes - 1}")
        if c in forgotten_classes:
            raise RequestError(f"class {c} was already forgotten by an earlier batch")
        ids = train.ids[train.y == c].tolist()
    else:
        ids = list(req.sample_ids)
        if req.kind == "subject" and not ids:
            if req.subject_id not in subjects:
                raise RequestError(
                    f"unknown subject {req.subject_id!r}: not in the subject -> sample mapping"
                )
            ids = sorted(set(subjects[req.subject_id]))
        gone = [i for i in ids if i in erased]
        if gone and req.kind == "samples":
            raise RequestError(f"sample {gone[0]!r} was already erased by batch {erased[gone[0]]}")
        ids = [i for i in ids if i not in erased]  # a subject's erased samples are simply done
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise RequestError(
                f"unknown sample id {unknown[0]!r}"
                + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
                + ": not in the training snapshot"
            )
    if not ids:
        raise RequestError("the request resolves to no sample of the current training snapshot")
    if len(set(ids)) >= len(known):
        raise RequestError(
            "the request covers the whole training set: nothing would remain; retrain instead"
        )
    return sorted(set(ids))
