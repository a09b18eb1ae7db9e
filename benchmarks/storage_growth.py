"""Storage growth of a deletion batch: bytes added to the DVC cache and remote, and seconds, when a
batch erases N random training samples from a workspace snapshot.

    .venv/bin/python benchmarks/storage_growth.py --data-dir ../shared/datasets/cifar10 --n 500 \
        --batches 2 --out benchmarks/results/storage-cifar10-500.json

It runs the workspace's own snapshot code (`init_workspace`, `read_state`, `commit_snapshot`), so
the same script measures any commit of this repository; it was run at 29cdc3d (one npz per split)
and after the per-sample layout, side by side (benchmarks/notes/storage.md).
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml


def du(path: Path) -> int:
    """Bytes of distinct files (hardlinks counted once) under path."""
    seen, total = set(), 0
    for root, _, files in os.walk(path):
        for f in files:
            st = os.stat(os.path.join(root, f))
            if st.st_ino not in seen:
                seen.add(st.st_ino)
                total += st.st_size
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--batches", type=int, default=2)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from pipelines.env import quiet_environment

    quiet_environment()
    from pipelines import snapshot
    from pipelines.workspace import init_workspace

    work = Path(args.workdir or tempfile.mkdtemp(prefix="storage-growth-"))
    params = yaml.safe_load((Path(__file__).resolve().parent.parent / "params.yaml").read_text())
    params["data"] = {
        "source": "npz",
        "root": str(Path(args.data_dir).resolve()),
        "heldout_fraction": 0.1,
        "seed": 0,
    }
    (work / "params.yaml").parent.mkdir(parents=True, exist_ok=True)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    t0 = time.perf_counter()
    ws = init_workspace(work / "ws", work / "params.yaml")
    init_s = time.perf_counter() - t0
    cache, remote = ws.root / ".dvc" / "cache", ws.state / "dvc-remote"
    rows = []
    rng = np.random.default_rng(0)
    takes_forget = "forget" in inspect.signature(snapshot.commit_snapshot).parameters
    for b in range(args.batches):
        c0, r0 = du(cache), du(remote)
        t0 = time.perf_counter()
        st = snapshot.read_state(ws, "HEAD")
        t_read = time.perf_counter() - t0
        pick = np.zeros(len(st.train), dtype=bool)
        pick[rng.choice(len(st.train), size=args.n, replace=False)] = True
        erased = {**st.erased, **dict.fromkeys(st.train.ids[pick].tolist(), f"batch-{b}")}
        part = st.train.take(pick) if takes_forget else st.train.take(~pick)
        t1 = time.perf_counter()
        snapshot.commit_snapshot(
            ws, st, part, erased, st.forgotten_classes, f"batch-{b}: erase {args.n}"
        )
        t_commit = time.perf_counter() - t1
        rows.append(
            {
                "batch": b,
                "read_s": round(t_read, 2),
                "commit_push_s": round(t_commit, 2),
                "cache_bytes_added": du(cache) - c0,
                "remote_bytes_added": du(remote) - r0,
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    head = ws.git("rev-parse", "--short", "HEAD")
    result = {
        "n": args.n,
        "train_samples": len(st.train),
        "init_s": round(init_s, 1),
        "batches": rows,
        "cache_bytes_total": du(cache),
        "workspace_head": head,
    }
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
