"""A running batch renews its model's lease from a background thread.

Without it the lease was extended only when a stage began, so a stage longer than the lease (a
large model unlearning on CPU, a slow evaluation) let the next run see the lease run out, take
the model over and recover this batch's requests while this batch still worked on them. The
keeper renews every quarter of the lease; a process that dies renews nothing, and its lease runs
out as before. A lease taken over all the same (the store was unreachable for longer than the
lease) is reported by the next stage, which then stops the batch (store.touch_lease), and by
publish's last check before the candidate alias.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

from pipelines.lease import Lease, LeaseLost
from pipelines.store import RequestStore
from pipelines.store_faults import StoreError

log = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews `batch_id`'s lease on `model` every `every` (default: a quarter of `ttl`)."""

    def __init__(
        self, where: str | Path, model: str, batch_id: str, ttl: timedelta,
        every: timedelta | None = None,
    ) -> None:  # fmt: skip
        self.where, self.model, self.batch_id, self.ttl = where, model, batch_id, ttl
        self.every = (every or ttl / 4).total_seconds()
        self.renewals, self.lost = 0, ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease {batch_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:  # a store of its own each time: connections are not shared across threads
                with RequestStore(self.where) as store:
                    store.touch_lease(self.model, self.batch_id, None, self.ttl)
                self.renewals += 1
            except LeaseLost as err:
                self.lost = str(err)
                log.warning("%s", err)
                return
            except StoreError as err:  # unreachable for now: try again at the next renewal
                log.warning("could not renew the lease of %s: %s", self.batch_id, err)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)


@contextmanager
def kept(
    where: str | Path, model: str, batch_id: str, ttl: timedelta, every: timedelta | None = None
) -> Iterator[LeaseKeeper]:
    """The lease renewed while the block runs; renewing stops before the block's caller lets go
    of the lease (a renewal after that would find it gone)."""
    keeper = LeaseKeeper(where, model, batch_id, ttl, every)
    keeper.start()
    try:
        yield keeper
    finally:
        keeper.stop()


@contextmanager
def holding(where: str | Path, model: str, holder: str, ttl: timedelta) -> Iterator[Lease | None]:
    """`model`'s lease taken as `holder` (LeaseHeld if a live batch holds it), renewed while the
    block runs, then let go. Yields the stale lease it replaced, if any."""
    with RequestStore(where) as store:
        replaced = store.take_lease(model, holder, ttl)
        try:
            with kept(where, model, holder, ttl):
                yield replaced
        finally:
            store.drop_lease(model, holder)
