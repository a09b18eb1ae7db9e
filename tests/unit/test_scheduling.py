"""The scheduled-run rule and deadline extensions (components/scheduling.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from components.scheduling import extended_deadline, reason_to_wait

NOW = datetime(2027, 1, 10, 12, tzinfo=UTC)


def _due(*days: float) -> list[datetime]:
    return [NOW + timedelta(days=d) for d in days]


def test_a_scheduled_run_waits_for_a_fuller_batch_while_deadlines_are_far():
    why = reason_to_wait(_due(20, 25), NOW, min_requests=5, margin_days=3)
    assert why is not None and "2 of 5 requests ready" in why and "2027-01-30" in why


def test_it_runs_early_when_the_earliest_deadline_is_within_the_margin():
    assert reason_to_wait(_due(20, 2.9), NOW, min_requests=5, margin_days=3) is None
    assert reason_to_wait(_due(-1), NOW, min_requests=5, margin_days=0) is None  # overdue


def test_it_runs_once_enough_requests_are_ready_or_when_nothing_is():
    assert reason_to_wait(_due(20, 21, 22), NOW, min_requests=3, margin_days=3) is None
    assert reason_to_wait([], NOW, min_requests=3, margin_days=3) is None


def test_an_extension_is_bounded_by_the_first_deadline_plus_the_maximum():
    received = NOW - timedelta(days=10)
    first = received + timedelta(days=30)
    later = extended_deadline(received, first, timedelta(days=60), 30, 60)
    assert later == received + timedelta(days=90)
    with pytest.raises(ValueError, match="at the latest"):
        extended_deadline(received, later, timedelta(days=1), 30, 60)
    with pytest.raises(ValueError, match="later"):
        extended_deadline(received, first, timedelta(0), 30, 60)
