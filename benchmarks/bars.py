"""The bars a table's rows are judged against, each stated once. results.md's targets
(`report.targets`, from docs/method.md) and the README's headline (`summary.checks`, issue 20's
stricter reading) read the same numbers and the same rules, so the two pages cannot disagree on
what "met" means. The time bars are report_timing.TIME_LIMITS.
"""

from __future__ import annotations

DFT_MAX = 1.0  # class: RFA's Acc(Dft), in percent
DRT_DROP_MAX = 1.0  # class: RFA's Acc(Drt) at most this far below the original's
MIA_EFFICACY_MIN = 95.0  # class: RFA's MIA-efficacy
PROBE_WITHIN = 5.0  # class: a probe's accuracy on Dft within this of Retrain's
SAMPLE_GAP_MAX = 2.0  # 10 %: docs/method.md's bar on the average gap to Retrain
HEADLINE_GAP_MAX = 1.5  # 10 %: issue 20's bar on the same gap
DR_DROP_MAX = 3.0  # a baseline's Acc(Dr) below the original's: issue 20's "a few points"
ORACLE_FIT_MAX = 1.0  # Retrain's Acc(Dr) below the original's: a full oracle


def forgot_class(dft: float | None) -> bool:
    return dft is not None and dft <= DFT_MAX


def kept_drt(drt: float | None, drt0: float) -> bool:
    return drt is not None and drt >= drt0 - DRT_DROP_MAX


def probe_near(acc: float, oracle: float) -> bool:
    return abs(acc - oracle) <= PROBE_WITHIN


def below_original(gap: float, original_gap: float) -> bool:
    """Strictly below: equal means the method did no better than leaving the model untouched."""
    return gap < original_gap


def smallest_gap(gap: float, baselines: dict[str, float]) -> tuple[str, bool]:
    """The baseline with the smallest gap, and whether `gap` is at most its (a tie counts)."""
    best = min(baselines, key=baselines.get)
    return best, gap <= baselines[best]


def kept_dr(dr: float, dr0: float, limit: float) -> bool:
    return dr >= dr0 - limit
