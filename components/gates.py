"""Validation gates (method.md section 5), as pure functions of two metric dicts.

Without an oracle, a gate compares the unlearned model with the original model and with Dt, the
test images it never trained on. No gate reads the heldout split: RFA's sample target is built
from it, so it is no independent baseline (method.md's leakage rule).

Every gate measured on a sample (accuracies, attack scores) gets a noise allowance of `noise_z`
standard errors of the measurement, recorded next to the bare threshold: one image of 2,000 must
not decide, and an attack on a few dozen samples cannot resolve a 3-point or 0.05-AUC difference.
The class MIA-efficacy floor (target ~100, far from chance) stays strict.

MIA-efficacy gates read three attack features (true-class confidence, entropy, modified entropy)
and gate on their median: one feature whose SVC boundary is arbitrary (a model that barely
overfits gives the attack nothing to learn) can neither fail nor pass a batch alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Literal

from components.metrics import auc_standard_error, rate_standard_error, two_rate_standard_error
from components.settings import GateSettings

Metrics = dict[str, float | None]


@dataclass(frozen=True)
class GateResult:
    name: str
    value: float | None
    comparator: Literal["<=", ">="]
    threshold: float  # the bare threshold derived from params.yaml
    allowance: float  # noise allowance added on the lenient side (0 for strict gates)
    reference: str  # what the threshold is relative to
    passed: bool
    kind: Literal["utility", "forgetting", "privacy"] = "forgetting"

    @property
    def effective_threshold(self) -> float:
        return (
            self.threshold + self.allowance
            if self.comparator == "<="
            else self.threshold - self.allowance
        )

    def to_dict(self) -> dict:
        return {**asdict(self), "effective_threshold": self.effective_threshold}


@dataclass(frozen=True)
class GateReport:
    scenario: str
    results: tuple[GateResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def forgetting_passed(self) -> bool:
        """Every forgetting gate passes (on the base model: there is nothing to forget)."""
        return all(r.passed for r in self.results if r.kind == "forgetting")

    @property
    def failures(self) -> list[str]:
        return [
            f"{r.name}: {_fmt(r.value)} not {r.comparator} {_fmt(r.effective_threshold)}"
            for r in self.results
            if not r.passed
        ]

    def to_dict(self) -> dict:
        return {
            "scenario": self.scenario,
            "passed": self.passed,
            "gates": [r.to_dict() for r in self.results],
        }


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}".rstrip("0").rstrip(".")


def _gate(
    name: str,
    value: float | None,
    comparator: Literal["<=", ">="],
    threshold: float,
    reference: str,
    allowance: float = 0.0,
    kind: Literal["utility", "forgetting", "privacy"] = "forgetting",
) -> GateResult:
    eff = threshold + allowance if comparator == "<=" else threshold - allowance
    ok = value is not None and (value <= eff + 1e-9 if comparator == "<=" else value >= eff - 1e-9)
    return GateResult(
        name, value, comparator, float(threshold), float(allowance), reference, bool(ok), kind
    )


def _n(m: Metrics, key: str) -> int:
    return int(m.get(key) or 1)


def _kept(
    name: str, key: str, n_key: str, orig: Metrics, new: Metrics, drop: float, z: float, label: str
) -> GateResult:
    """Accuracy kept within `drop` points of the original's, measured on the same n samples: the
    allowance is z standard errors of the difference of the two rates (pooled)."""
    se = two_rate_standard_error(new[key] or 0.0, _n(new, n_key), orig[key] or 0.0, _n(orig, n_key))
    return _gate(
        name,
        new[key],
        ">=",
        (orig[key] or 0) - drop,
        f"original {label} - {name}_drop_pt",
        z * se,
        "utility",
    )


def _leakage(orig: Metrics, new: Metrics, cfg: GateSettings) -> GateResult:
    # Leakage is a balanced accuracy on about |Dt| held-out examples, for both models: the
    # difference of two such estimates has sqrt(2) times the error of one.
    allowance = (
        cfg.noise_z * rate_standard_error(new["retain_leakage"] or 50.0, _n(new, "n_test")) * 2**0.5
    )
    return _gate(
        "retain_leakage",
        new["retain_leakage"],
        "<=",
        (orig["retain_leakage"] or 0) + cfg.retain_leakage_rise_pt,
        "original model + retain_leakage_rise_pt",
        allowance,
        "privacy",
    )


MIA_SUFFIXES = ("", "_entropy", "_modified_entropy")


def _median_feature(values: list[float | None]) -> int | None:
    """Index of the median of three attack values (None if any is missing)."""
    if any(v is None or v != v for v in values):
        return None
    return sorted(range(len(values)), key=lambda i: values[i])[len(values) // 2]


def _mia_class(new: Metrics, cfg: GateSettings) -> GateResult:
    """Df must look unseen to the attacks: called non-member at least `class_mia_min` % of the time,
    or at least as often as Dft, the forgotten class's test images, which no model ever trained on
    (less `class_mia_tolerance_pt` and the noise allowance). Without an oracle, Dft is how Retrain
    would treat Df. The absolute floor alone failed a Fashion-MNIST class batch that took Acc(Df)
    and Acc(Dft) to 0: a model that barely overfits gives the attacks nothing to learn, and they
    called Dft member as often as Df (benchmarks/notes/gates.md)."""
    vals = [new.get("mia_efficacy" + s) for s in MIA_SUFFIXES]
    refs = [new.get("mia_dft" + s) for s in MIA_SUFFIXES]
    i, j = _median_feature(vals), _median_feature(refs)
    shown = " / ".join("n/a" if v is None else f"{v:.1f}" for v in vals)
    unseen = None if j is None else refs[j]
    if unseen is None or unseen - cfg.class_mia_tolerance_pt >= cfg.class_mia_min:
        return _gate(
            "mia_efficacy",
            None if i is None else vals[i],
            ">=",
            cfg.class_mia_min,
            f"median of the confidence / entropy / modified-entropy attacks ({shown})",
        )
    se = two_rate_standard_error(
        vals[i] if i is not None else 0.0, _n(new, "n_forget"), unseen, _n(new, "n_dft")
    )
    return _gate(
        "mia_efficacy",
        None if i is None else vals[i],
        ">=",
        unseen - cfg.class_mia_tolerance_pt,
        f"median attack ({shown}) vs the same on the class's unseen test images, {unseen:.1f}, "
        f"less class_mia_tolerance_pt",
        cfg.noise_z * se,
    )


def _mia_sample(new: Metrics, cfg: GateSettings) -> GateResult:
    n_f, n_t = _n(new, "n_forget"), _n(new, "n_test")
    gaps, ses = [], []
    for s in MIA_SUFFIXES:
        # Df and unseen Dt scored by the same cross-fitted attacks (metrics.mia_unseen).
        eff, ref = new.get("mia_forget_cf" + s), new.get("mia_unseen" + s)
        gaps.append(None if eff is None or ref is None else abs(eff - ref))
        ses.append(two_rate_standard_error(eff or 0.0, n_f, ref or 0.0, n_t))
    i = _median_feature(gaps)
    shown = " / ".join("n/a" if g is None else f"{g:.1f}" for g in gaps)
    return _gate(
        "mia_efficacy_gap",
        None if i is None else gaps[i],
        "<=",
        cfg.sample_mia_tolerance_pt,
        f"|MIA(Df) - MIA(unseen Dt)|, cross-fitted attacks, median of confidence / entropy / "
        f"modified-entropy ({shown})",
        0.0 if i is None else cfg.noise_z * ses[i],
    )


def _forget_max(name: str, key: str, n_key: str, new: Metrics, cfg: GateSettings) -> GateResult:
    # The error of a rate at the threshold itself (the test of "at most 1 %"), not at the measured
    # value: a model that forgot little must not earn a wider allowance by its own failure.
    allowance = cfg.noise_z * rate_standard_error(cfg.class_forget_max_pct, _n(new, n_key))
    return _gate(
        name,
        new[key],
        "<=",
        cfg.class_forget_max_pct,
        f"absolute: Acc({key.removeprefix('acc_').title()})",
        allowance,
    )


def class_gates(orig: Metrics, new: Metrics, cfg: GateSettings) -> list[GateResult]:
    z = cfg.noise_z
    return [
        _kept(
            "retained_utility",
            "acc_drt",
            "n_test",
            orig,
            new,
            cfg.retained_utility_drop_pt,
            z,
            "Acc(Drt)",
        ),
        _kept(
            "retain_fit", "acc_dr", "n_retain_eval", orig, new, cfg.retain_fit_drop_pt, z, "Acc(Dr)"
        ),
        _forget_max("forget_train", "acc_df", "n_forget", new, cfg),
        _forget_max("forget_test", "acc_dft", "n_dft", new, cfg),
        _mia_class(new, cfg),
        _gate(
            "loss_mia_auc",
            new["loss_mia_auc"],
            "<=",
            cfg.class_loss_mia_auc_max,
            "absolute",
            z
            * auc_standard_error(
                new["loss_mia_auc"] or 0.5, _n(new, "n_forget"), _n(new, "n_forget_test")
            ),
        ),
        _leakage(orig, new, cfg),
    ]


def sample_gates(orig: Metrics, new: Metrics, cfg: GateSettings) -> list[GateResult]:
    n_f = _n(new, "n_forget")
    gap = (
        None
        if new["acc_df"] is None or new["acc_dt"] is None
        else abs(new["acc_df"] - new["acc_dt"])
    )
    gap_se = two_rate_standard_error(
        new["acc_df"] or 0.0, n_f, new["acc_dt"] or 0.0, _n(new, "n_dt")
    )
    auc = new["loss_mia_auc"]
    auc_gap = None if auc is None or auc != auc else abs(auc - 0.5)
    auc_se = auc_standard_error(
        auc if auc_gap is not None else 0.5, n_f, int(new.get("n_forget_test") or n_f)
    )
    return [
        _kept(
            "retained_utility",
            "acc_dt",
            "n_dt",
            orig,
            new,
            cfg.retained_utility_drop_pt,
            cfg.noise_z,
            "Acc(Dt)",
        ),
        _kept(
            "retain_fit",
            "acc_dr",
            "n_retain_eval",
            orig,
            new,
            cfg.retain_fit_drop_pt,
            cfg.noise_z,
            "Acc(Dr)",
        ),
        _gate(
            "forget_gap",
            gap,
            "<=",
            cfg.sample_forget_gap_pt,
            "|Acc(Df) - Acc(Dt)|",
            cfg.noise_z * gap_se,
        ),
        _mia_sample(new, cfg),
        _gate(
            "loss_mia_auc_gap",
            auc_gap,
            "<=",
            cfg.sample_loss_mia_auc_tolerance,
            "|AUC - 0.5|",
            cfg.noise_z * auc_se,
        ),
        _leakage(orig, new, cfg),
    ]


GATE_SETS: dict[str, Callable[[Metrics, Metrics, GateSettings], list[GateResult]]] = {
    "class": class_gates,
    "sample": sample_gates,
}


def evaluate_gates(
    scenario: str, original: Metrics, unlearned: Metrics, cfg: GateSettings
) -> GateReport:
    """All gates of the scenario; a gate with a missing value fails (never passes by default)."""
    try:
        gates = GATE_SETS[scenario]
    except KeyError:
        raise ValueError(
            f"unknown scenario {scenario!r}; choose one of {sorted(GATE_SETS)}"
        ) from None
    return GateReport(scenario, tuple(gates(original, unlearned, cfg)))
