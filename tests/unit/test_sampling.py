"""A run's seconds projected from its first part (benchmarks/sampling.py), on a known clock."""

from __future__ import annotations

import pytest

from benchmarks.sampling import LayoutError, Sampled, Sampler

# Two kinds of step: "max" costs 1 s, "min" 3 s; 5 s of set-up before the first step.
LAYOUT = [("max", 4), ("min", 10), ("max", 4), ("min", 10)]
COST = {"max": 1.0, "min": 3.0}
SETUP = 5.0


class FakeClock:
    def __init__(self) -> None:
        self.wall = 0.0

    def __call__(self) -> tuple[float, float]:
        return self.wall, self.wall / 2  # CPU: half the wall seconds, as on a shared core


def _drive(sampler: Sampler, clock: FakeClock, every: int = 2) -> bool:
    """Run the fake loop, reporting every `every` steps and at the last; True if it was stopped."""
    kinds = [k for k, n in LAYOUT for _ in range(n)]
    clock.wall += SETUP
    for i, kind in enumerate(kinds, start=1):
        clock.wall += COST[kind]
        if i % every == 0 or i == len(kinds):
            try:
                sampler(i, len(kinds), {})
            except Sampled:
                return True
    return False


def test_each_kind_of_step_gets_its_own_rate_and_the_projection_is_exact_on_a_steady_clock():
    clock = FakeClock()
    sampler = Sampler(budget=10.0, layout=LAYOUT, clock=clock)
    assert _drive(sampler, clock)  # stopped before its 28 steps
    p = sampler.projection()
    whole = SETUP + 8 * COST["max"] + 20 * COST["min"]
    assert p["sampled_steps"] < p["steps"] == 28
    assert p["per_step"] == pytest.approx(COST)
    assert p["seconds"] == pytest.approx(whole) and p["cpu_seconds"] == pytest.approx(whole / 2)
    # Read as one kind of step, the same reports would mis-project: the layout is what helps.
    clock = FakeClock()
    plain = Sampler(budget=10.0, clock=clock)
    assert _drive(plain, clock)
    assert plain.projection()["seconds"] != pytest.approx(whole)


def test_a_run_is_not_stopped_before_every_kind_has_an_interval_nor_before_its_budget():
    clock = FakeClock()
    sampler = Sampler(budget=0.0, layout=LAYOUT, clock=clock)
    assert _drive(sampler, clock)
    assert sampler.reports[-1][0] > 4  # into the first "min" stretch, not within "max" alone
    clock = FakeClock()
    patient = Sampler(budget=1e9, layout=LAYOUT, clock=clock)
    assert not _drive(patient, clock)  # ran to its end: then it is measured, not projected


def test_a_layout_that_does_not_add_up_to_the_loops_steps_is_refused():
    clock = FakeClock()
    sampler = Sampler(budget=0.0, layout=LAYOUT[:3], clock=clock)
    with pytest.raises(LayoutError, match="reports 28 steps, its layout has 18"):
        _drive(sampler, clock)


def test_a_whole_run_replayed_at_a_budget_projects_as_a_run_stopped_there():
    from benchmarks.sampling import replay

    clock = FakeClock()
    live = Sampler(budget=10.0, layout=LAYOUT, clock=clock)
    assert _drive(live, clock)
    clock = FakeClock()
    whole = Sampler(budget=float("inf"), layout=LAYOUT, clock=clock)
    assert not _drive(whole, clock)
    assert replay(whole, 10.0) == live.projection()
    assert replay(whole, 1e9) is None  # the run ends before such a budget: nothing projected
