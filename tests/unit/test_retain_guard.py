"""RFA's retain guard (components/unlearning/guard.py) on a toy module."""

import torch
from torch import nn

from components.unlearning.guard import RetainGuard, spaced_subset, trainable_state


def _net() -> nn.Linear:
    net = nn.Linear(2, 2)
    net.bias.requires_grad_(False)  # frozen weights are not the guard's to restore
    return net


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
    assert g.restore(net) == 10
    assert torch.equal(net.weight, kept) and bool((net.bias == 3.0).all())


def test_without_a_passing_check_restore_gives_back_the_starting_adapter():
    net = _net()
    start = net.weight.detach().clone()
    g = RetainGuard(torch.arange(2), 90.0, 1.0, 10, trainable_state(net))
    with torch.no_grad():
        net.weight.add_(5.0)
    assert g.observe(10, 10.0, net) is False
    assert g.restore(net) == 0 and torch.equal(net.weight, start)
