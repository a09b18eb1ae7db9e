"""benchmarks/run.sh with a recording stub for the CLI: JOBS=2 splits each table's methods between
two processes (each with Retrain), then one run over every method assembles the table, and a
table's notes file goes back under it (a plain re-run once dropped every table's notes), and the
README's headline is rendered last; TABLES picks tables by name (or by folder) and refuses a
name run.sh does not have."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "run.sh"
TABLES = sum(line.startswith("table ") for line in SCRIPT.read_text().splitlines())


def _run(tmp_path: Path, **env_extra: str) -> list[str]:
    bench = tmp_path / "benchmarks"  # run.sh works in the folder above its own: a copy, not ROOT
    (bench / "oracles").mkdir(parents=True)
    (bench / "oracles" / "cifar10-oracle.pt").write_bytes(b"weights")
    for kind in ("base", "shadows"):
        (bench / "oracles" / kind).mkdir()
        (bench / "oracles" / kind / f"fm-{kind}.bin").write_bytes(kind.encode())
    (bench / "notes").mkdir()
    (bench / "notes" / "digits-class0.md").write_text("what was tried\n")
    shutil.copy(SCRIPT, bench)
    calls = tmp_path / "calls"
    stub = tmp_path / "unlearn"
    stub.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    stub.chmod(0o755)
    env = {**os.environ, "UNLEARN": str(stub), "JOBS": "2", "METHODS": "retrain,rfa,ft,rl"}
    subprocess.run(["bash", str(bench / "run.sh")], env={**env, **env_extra}, check=True,
                   capture_output=True)  # fmt: skip
    return calls.read_text().splitlines() if calls.exists() else []


def test_each_table_runs_in_two_processes_then_assembles_and_gets_its_notes_back(tmp_path):
    calls = _run(tmp_path)
    assert TABLES >= 6  # the four re-run tables and the two digits ones
    # The committed oracles are copied into the cache, where the bench looks them up.
    cache = tmp_path / ".cache" / "bench"
    assert (cache / "oracles" / "cifar10-oracle.pt").read_bytes() == b"weights"
    # A Fashion-MNIST table's base model and LiRA shadows too, each where the bench looks it up.
    assert (cache / "base" / "fm-base.bin").read_bytes() == b"base"
    assert (cache / "shadows" / "fm-shadows.bin").read_bytes() == b"shadows"
    assert sorted(p.name for p in (cache / "oracles").iterdir()) == ["cifar10-oracle.pt"]
    benches = [c for c in calls if c.startswith("bench ")]
    assert len(benches) == 3 * TABLES and calls[-1] == "bench-summary"
    partial = [c for c in benches if "--out .cache/bench/partial/" in c]
    assert sum("--methods retrain,rfa,rl " in c for c in partial) == TABLES
    assert sum("--methods retrain,ft " in c for c in partial) == TABLES
    whole = [c for c in benches if "--out benchmarks/results/" in c]
    assert len(whole) == TABLES and all("--methods retrain,rfa,ft,rl " in c for c in whole)
    # The folders the headline reads: the earlier protocol's tables of the same name stay as kept.
    from benchmarks.summary import TABLES as HEADLINE

    assert sorted(c.rpartition("--out benchmarks/results/")[2] for c in whole) == sorted(HEADLINE)
    # Only the table with a notes file is re-rendered, after its assembling run.
    (report,) = [c for c in calls if c.startswith("bench-report ")]
    assert report == (
        "bench-report benchmarks/results/digits-class0 --notes benchmarks/notes/digits-class0.md"
    )
    assert calls.index(report) == 1 + next(
        i for i, c in enumerate(calls) if c.endswith("--out benchmarks/results/digits-class0")
    )


def test_tables_names_the_tables_to_run_and_a_misspelt_name_runs_nothing(tmp_path):
    for tables in (
        "fashion_mnist-sample10,digits-class0",
        "fashion_mnist-sample10-merged,digits-class0",
    ):
        calls = _run(tmp_path / tables, TABLES=tables)
        outs = [c.rpartition("--out ")[2] for c in calls if c.startswith("bench ")]
        assert [o for o in outs if o.startswith("benchmarks/")] == [
            "benchmarks/results/fashion_mnist-sample10-merged", "benchmarks/results/digits-class0"
        ]  # fmt: skip
        assert len(outs) == 6  # each: two processes and the assembling run
    with pytest.raises(subprocess.CalledProcessError) as refused:
        _run(tmp_path / "typo", TABLES="fashion_mnist-sample10,fashion-mnist-class0")
    assert refused.value.returncode == 2
    assert refused.value.stderr == b"TABLES: no table named fashion-mnist-class0\n"
    assert not (tmp_path / "typo" / "calls").exists()  # nothing ran, not even the good name


@pytest.mark.parametrize(("given", "expect"), [(None, "1"), ("2", "2")])
def test_each_process_runs_one_torch_thread_unless_told_otherwise(tmp_path, given, expect):
    """The committed tables ran one thread per process; the thread count is part of a point's
    digest and changes float sums, so `make bench` reproduces them only with the same count."""
    (tmp_path / "benchmarks").mkdir()
    shutil.copy(SCRIPT, tmp_path / "benchmarks")
    seen, stub = tmp_path / "threads", tmp_path / "unlearn"
    stub.write_text(f'#!/bin/sh\necho "$OMP_NUM_THREADS" >> {seen}\n')
    stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env |= {"UNLEARN": str(stub), "TABLES": "digits-class0"}
    env |= {"OMP_NUM_THREADS": given} if given else {}
    subprocess.run(["bash", str(tmp_path / "benchmarks" / "run.sh")], env=env, check=True,
                   capture_output=True)  # fmt: skip
    assert set(seen.read_text().split()) == {expect}
