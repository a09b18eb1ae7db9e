"""When a scheduled deletion batch runs: the rule is pure, so it is tested without a clock."""

from __future__ import annotations

from datetime import datetime, timedelta


def reason_to_wait(
    deadlines: list[datetime], now: datetime, min_requests: int, margin_days: float
) -> str | None:
    """Why a scheduled run should wait for more requests, or None to run now. It runs once
    `min_requests` are ready, or earlier when the earliest deadline falls within the margin (a
    small batch on time beats a full one too late); with nothing ready there is nothing to do."""
    if not deadlines or len(deadlines) >= min_requests:
        return None
    earliest = min(deadlines)
    if earliest - now <= timedelta(days=margin_days):
        return None
    return (
        f"{len(deadlines)} of {min_requests} requests ready; the earliest is due "
        f"{earliest:%Y-%m-%d %H:%M} UTC, beyond the {margin_days:g}-day margin"
    )


def extended_deadline(
    received_at: datetime, current: datetime, by: timedelta, deadline_days: int, max_days: int
) -> datetime:
    """The deadline moved later by `by`, at most `max_days` past the first one (received_at +
    deadline_days); ValueError when it would pass that bound or not move later."""
    if by <= timedelta(0):
        raise ValueError("an extension must move the deadline later")
    bound = received_at + timedelta(days=deadline_days + max_days)
    new = current + by
    if new > bound:
        raise ValueError(
            f"the deadline may move to {bound:%Y-%m-%d} at the latest ({max_days} days past the "
            f"first one; requests.max_extension_days)"
        )
    return new
