"""RFA's retain guard (components/unlearning/guard.py) on a toy module."""

import random
from collections.abc import Callable

import torch
from torch import nn

from components.unlearning.guard import RetainGuard, spaced_subset, trainable_state


def _net() -> nn.Linear:
    net = nn.Linear(2, 2)
    net.bias.requires_grad_(False)  # frozen weights are not the guard's to restore
    return net


def _unread() -> float:
    raise AssertionError("nothing was held, so restore has nothing to score")


def _set(net: nn.Linear, value: float) -> None:
    with torch.no_grad():
        net.weight.fill_(value)


def _score_by_weight(net: nn.Linear, acc: dict[float, float]) -> Callable[[], float]:
    """The toy's 'accuracy on the subset': looked up by the weight the adapter has now."""
    return lambda: acc[net.weight[0, 0].item()]


def test_spaced_subset_is_fixed_sorted_unique_and_capped_by_n():
    a = spaced_subset(1000, 10, torch.device("cpu"))
    assert a.tolist() == spaced_subset(1000, 10, torch.device("cpu")).tolist()
    assert a[0] == 0 and a[-1] == 999 and len(a) == 10 and bool((a[1:] > a[:-1]).all())
    assert spaced_subset(3, 512, torch.device("cpu")).tolist() == [0, 1, 2]


def test_periodic_checks_fall_on_multiples():
    g = RetainGuard(torch.arange(2), 90.0, 1.0, 10, {})
    assert [s for s in range(1, 36) if g.due(s)] == [10, 20, 30]


def test_it_keeps_the_latest_passing_adapter_and_restore_puts_it_back():
    net = _net()
    g = RetainGuard(torch.arange(2), 90.0, 1.0, 10, trainable_state(net))
    with torch.no_grad():
        net.weight.fill_(1.0)
    assert g.observe(10, 89.5, net) is True and g.last_good_step == 10  # 89.5 >= 89 floor
    kept = net.weight.detach().clone()
    with torch.no_grad():
        net.weight.fill_(7.0)
        net.bias.fill_(3.0)
    assert g.observe(20, 88.0, net) is False and g.last_good_step == 10  # a dip keeps 10's
    assert torch.equal(net.weight, torch.full_like(kept, 7.0))  # observing never restores
    assert g.restore(net, _unread) == [] and g.last_good_step == 10
    assert torch.equal(net.weight, kept) and bool((net.bias == 3.0).all())


def test_without_a_passing_check_restore_gives_back_the_starting_adapter():
    net = _net()
    start = net.weight.detach().clone()
    g = RetainGuard(torch.arange(2), 90.0, 1.0, 10, trainable_state(net))
    with torch.no_grad():
        net.weight.add_(5.0)
    assert g.observe(10, 10.0, net) is False
    assert g.restore(net, _unread) == [] and g.last_good_step == 0
    assert torch.equal(net.weight, start)


def test_held_checks_are_scored_newest_first_only_when_the_end_fails():
    net = _net()
    g = RetainGuard(torch.arange(2), 90.0, 1.0, 10, trainable_state(net))
    _set(net, 1.0)
    assert g.observe(10, 95.0, net) is True
    for step in (20, 30, 40):
        _set(net, step / 10)
        g.hold(step, net)
    _set(net, 5.0)
    assert g.observe(50, 70.0, net) is False  # the end, below the floor
    scored = g.restore(net, _score_by_weight(net, {4.0: 80.0, 3.0: 95.0}))  # 2.0: never read
    assert scored == [(40, 80.0), (30, 95.0)] and g.last_good_step == 30
    assert bool((net.weight == 3.0).all()) and g.held == []


def test_a_passing_scored_check_drops_the_adapters_held_before_it():
    net = _net()
    g = RetainGuard(torch.arange(2), 90.0, 1.0, 10, trainable_state(net))
    g.hold(10, net)
    g.hold(20, net)
    assert g.observe(30, 99.0, net) is True and g.held == [] and g.last_good_step == 30
    g.hold(40, net)
    assert [s for s, _ in g.held] == [40]


def test_holding_chooses_what_scoring_every_check_would():
    """200 random runs: checks every step, some scored as they come (where an early stop would
    end the run), the rest held; the end fails. The adapter put back is the one of the latest
    check whose accuracy passes, as when every check was scored at once (0: none)."""
    for trial in range(200):
        rng = random.Random(trial)
        n = rng.randint(1, 12)
        acc = {float(s): rng.choice([50.0, 88.9, 89.0, 95.0]) for s in range(1, n + 1)}
        net = _net()
        _set(net, 0.0)
        g = RetainGuard(torch.arange(2), 90.0, 1.0, 1, trainable_state(net))
        for step in range(1, n + 1):
            _set(net, float(step))
            if rng.random() < 0.3:
                g.observe(step, acc[float(step)], net)
            else:
                g.hold(step, net)
        _set(net, n + 1.0)
        assert g.observe(n + 1, 10.0, net) is False
        g.restore(net, _score_by_weight(net, acc))
        passing = [s for s in range(1, n + 1) if acc[float(s)] >= 89.0]
        want = passing[-1] if passing else 0
        assert (g.last_good_step, net.weight[0, 0].item()) == (want, float(want)), trial
