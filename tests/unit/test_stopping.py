"""The stop rule RFA checks every few steps (components/unlearning/stopping.py)."""

from components.unlearning.stopping import StopRule


def rule(**kw) -> StopRule:
    base = dict(check_every=10, min_steps=30, tolerance_pt=1.0, patience=2, target_acc=5.0)
    return StopRule(**{**base, **kw})


def test_checks_fall_on_multiples_past_min_steps_and_never_when_off():
    r = rule()
    assert [s for s in range(1, 61) if r.due(s)] == [30, 40, 50, 60]
    assert not any(rule(check_every=0).due(s) for s in range(1, 100))


def test_stops_on_reaching_the_target_within_the_tolerance():
    r = rule()
    assert r.observe(40.0) is None
    assert r.observe(6.0) == "target"  # 6 <= 5 + 1


def test_stalls_after_patience_checks_without_a_tolerance_sized_improvement():
    r = rule()
    assert r.observe(50.0) is None  # best 50
    assert r.observe(49.5) is None  # not 1 pt better: stale 1
    assert r.observe(48.0) is None  # 2 pt better than 50: best 48, stale 0
    assert r.observe(47.5) is None  # stale 1
    assert r.observe(47.2) == "stalled"  # stale 2 = patience


def test_no_stall_stop_when_patience_is_zero():
    r = rule(patience=0)
    assert all(r.observe(50.0) is None for _ in range(20))
