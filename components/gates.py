"""Validation gates (method.md section 5), as pure functions of two metric dicts.

Without an oracle, a gate compares the unlearned model with the original model and with the
heldout (never-trained-on) baseline. Gates on attack scores (loss-MIA, the sample-scenario
MIA-efficacy gap, retain leakage) get a noise allowance of `noise_z` standard errors of the
measurement, recorded next to the bare threshold, because an attack on a few dozen samples cannot
resolve a 3-point or 0.05-AUC difference. Accuracy gates and the class MIA-efficacy floor (whose
target, ~100, is far from chance) stay strict.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable, Literal

from components.metrics import auc_standard_error, rate_standard_error, two_rate_standard_error
from components.settings import GateSettings

Metrics = dict[str, float | None]


@dataclass(frozen=True)
class GateResult:
    name: str
    value: float | None
    comparator: Literal["<=", ">="]
    threshold: float          # the bare threshold derived from params.yaml
    allowance: float          # noise allowance added on the lenient side (0 for strict gates)
    reference: str            # what the threshold is relative to
    passed: bool

    @property
    def effective_threshold(self) -> float:
        return self.threshold + self.allowance if self.comparator == "<=" else self.threshold - self.allowance

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
    def failures(self) -> list[str]:
        return [f"{r.name}: {_fmt(r.value)} not {r.comparator} {_fmt(r.effective_threshold)}" for r in self.results if not r.passed]

    def to_dict(self) -> dict:
        return {"scenario": self.scenario, "passed": self.passed, "gates": [r.to_dict() for r in self.results]}


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}".rstrip("0").rstrip(".")


def _gate(name: str, value: float | None, comparator: Literal["<=", ">="], threshold: float, reference: str,
          allowance: float = 0.0) -> GateResult:
    eff = threshold + allowance if comparator == "<=" else threshold - allowance
    ok = value is not None and (value <= eff + 1e-9 if comparator == "<=" else value >= eff - 1e-9)
    return GateResult(name, value, comparator, float(threshold), float(allowance), reference, bool(ok))


def _leakage(orig: Metrics, new: Metrics, cfg: GateSettings) -> GateResult:
    # Leakage is a balanced accuracy on about |Dt| held-out examples, for both models: the
    # difference of two such estimates has sqrt(2) times the error of one.
    allowance = cfg.noise_z * rate_standard_error(new["retain_leakage"] or 50.0, int(new["n_test"] or 1)) * 2 ** 0.5
    return _gate("retain_leakage", new["retain_leakage"], "<=", (orig["retain_leakage"] or 0) + cfg.retain_leakage_rise_pt,
                 "original model + retain_leakage_rise_pt", allowance)


def class_gates(orig: Metrics, new: Metrics, cfg: GateSettings) -> list[GateResult]:
    return [
        _gate("retained_utility", new["acc_drt"], ">=", (orig["acc_drt"] or 0) - cfg.retained_utility_drop_pt,
              "original Acc(Drt) - retained_utility_drop_pt"),
        _gate("retain_fit", new["acc_dr"], ">=", (orig["acc_dr"] or 0) - cfg.retain_fit_drop_pt,
              "original Acc(Dr) - retain_fit_drop_pt"),
        _gate("forget_train", new["acc_df"], "<=", cfg.class_forget_max_pct, "absolute: Acc(Df)"),
        _gate("forget_test", new["acc_dft"], "<=", cfg.class_forget_max_pct, "absolute: Acc(Dft)"),
        _gate("mia_efficacy", new["mia_efficacy"], ">=", cfg.class_mia_min, "absolute"),
        _gate("loss_mia_auc", new["loss_mia_auc"], "<=", cfg.class_loss_mia_auc_max, "absolute",
              cfg.noise_z * auc_standard_error(new["loss_mia_auc"] or 0.5, int(new["n_forget"] or 1), int(new["n_forget_test"] or 1))),
        _leakage(orig, new, cfg),
    ]


def sample_gates(orig: Metrics, new: Metrics, cfg: GateSettings) -> list[GateResult]:
    n_f, n_h = int(new["n_forget"] or 1), int(new["n_heldout"] or 1)
    gap = None if new["acc_df"] is None or new["acc_dt"] is None else abs(new["acc_df"] - new["acc_dt"])
    mia_ref = new["mia_heldout"] or 0.0
    mia_gap = None if new["mia_efficacy"] is None else abs(new["mia_efficacy"] - mia_ref)
    mia_se = two_rate_standard_error(new["mia_efficacy"] or 0.0, n_f, mia_ref, n_h)
    auc = new["loss_mia_auc"]
    auc_gap = None if auc is None or auc != auc else abs(auc - 0.5)
    auc_se = auc_standard_error(auc if auc_gap is not None else 0.5, n_f, int(new.get("n_forget_test") or n_f))
    return [
        _gate("retained_utility", new["acc_dt"], ">=", (orig["acc_dt"] or 0) - cfg.retained_utility_drop_pt,
              "original Acc(Dt) - retained_utility_drop_pt"),
        _gate("retain_fit", new["acc_dr"], ">=", (orig["acc_dr"] or 0) - cfg.retain_fit_drop_pt,
              "original Acc(Dr) - retain_fit_drop_pt"),
        _gate("forget_gap", gap, "<=", cfg.sample_forget_gap_pt, "|Acc(Df) - Acc(Dt)|"),
        _gate("mia_efficacy_gap", mia_gap, "<=", cfg.sample_mia_tolerance_pt,
              f"|MIA(Df) - MIA(heldout)|, heldout baseline {mia_ref:.1f}", cfg.noise_z * mia_se),
        _gate("loss_mia_auc_gap", auc_gap, "<=", cfg.sample_loss_mia_auc_tolerance, "|AUC - 0.5|",
              cfg.noise_z * auc_se),
        _leakage(orig, new, cfg),
    ]


GATE_SETS: dict[str, Callable[[Metrics, Metrics, GateSettings], list[GateResult]]] = {
    "class": class_gates,
    "sample": sample_gates,
}


def evaluate_gates(scenario: str, original: Metrics, unlearned: Metrics, cfg: GateSettings) -> GateReport:
    """All gates of the scenario; a gate with a missing value fails (never passes by default)."""
    try:
        gates = GATE_SETS[scenario]
    except KeyError:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {sorted(GATE_SETS)}") from None
    return GateReport(scenario, tuple(gates(original, unlearned, cfg)))
