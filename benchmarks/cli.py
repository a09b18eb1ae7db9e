"""`unlearn bench`, `bench-time`, `bench-report`, `bench-merge`, `bench-summary`: the harness's
commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console

from benchmarks.provenance import stamp, stamped
from benchmarks.report import render_markdown, save_results
from components.files import write_atomic
from components.settings import Settings
from pipelines.cli_common import out

if TYPE_CHECKING:
    from benchmarks.bench_run import BenchRun


CACHE = Path(".cache") / "bench"  # oracles, base models, finished points (never in ../shared)


class BenchError(ValueError):
    """A bench run cannot start or a results folder is unusable (one `error:` line, exit 2)."""


def bench(
    dataset: str = typer.Option("digits", help="digits | fashion_mnist | cifar10"),
    data_dir: Path | None = typer.Option(
        None, help="Folder with train*.npz / test.npz (fashion_mnist, cifar10)."
    ),
    model: str = typer.Option(
        "small_cnn", help="small_cnn | resnet20 | resnet32 | resnet18 | vit (model.arch names)"
    ),
    checkpoint: Path | None = typer.Option(
        None, help="Pre-trained checkpoint (resnet20/32, akamaster's); without it one is trained."
    ),
    scenario: str = typer.Option("class", help="class | sample"),
    forget_class: int = typer.Option(0, help="Class forgotten (class scenario)."),
    fraction: float = typer.Option(0.1, help="Share of D forgotten at random (sample scenario)."),
    seeds: str = typer.Option(
        "1",
        help="Comma-separated reported seeds: each fixes the forget set and the training "
        "randomness; none may be the tuning seed.",
    ),
    tune_seed: int = typer.Option(
        0, help="The seed whose forget set (and the validation split) chooses every grid point."
    ),
    methods: str = typer.Option("rfa,ft,neggrad,rl,salun,scrub,retrain"),
    out_dir: Path = typer.Option(
        Path("benchmarks/results/run"), "--out", help="Output folder for results.json / results.md."
    ),
    params: Path = typer.Option(
        Path("params.yaml"), help="Params file: rfa / lora / train / evaluation / bench sections."
    ),
    oracle_epochs: int | None = typer.Option(
        None, help="Epochs of the Retrain oracle (default: train.epochs)."
    ),
    oracle_precision: str | None = typer.Option(
        None, help="fp32 | bf16 for the Retrain oracle (default: train.precision)."
    ),
    lira_shadows: int = typer.Option(
        0, help="Shadow models for the per-example LiRA attack (sample scenario; even; 0 = off)."
    ),
    grid: list[str] = typer.Option(
        [], "--grid", help="method=lr,lr,... replaces that method's grid (repeatable)."
    ),
    precision: str | None = typer.Option(
        None, help="auto | fp32 | bf16 for every method (default: the params file's rfa.precision)."
    ),
    oracles_only: bool = typer.Option(False, help="Train only the seeds' Retrain oracles."),
) -> None:
    """Benchmark RFA against the baselines and Retrain; writes results.json and results.md."""
    from pydantic import ValidationError

    from benchmarks.harness import BenchRun
    from components.runtime import TRAIN_PRECISIONS
    from components.settings import load_settings
    from pipelines.env import quiet_environment

    if scenario not in ("class", "sample"):
        raise typer.BadParameter("--scenario must be class or sample")
    if oracle_precision is not None and oracle_precision not in TRAIN_PRECISIONS:
        raise typer.BadParameter(f"--oracle-precision must be one of {sorted(TRAIN_PRECISIONS)}")
    try:
        run = BenchRun(
            dataset=dataset, data_dir=data_dir, model=model, checkpoint=checkpoint,
            scenario=scenario, forget_class=forget_class, fraction=fraction,
            seeds=[int(s) for s in seeds.split(",")] if seeds.strip() else [],
            tune_seed=tune_seed,
            methods=[m.strip() for m in methods.split(",") if m.strip()], out=out_dir,
            oracle_epochs=oracle_epochs, oracle_precision=oracle_precision,
            lira_shadows=lira_shadows, oracles_only=oracles_only,
        )  # fmt: skip
    except (ValidationError, ValueError) as e:
        raise typer.BadParameter(_first_error(e)) from None
    # Before any work: a typo costs nothing.
    settings = with_precision(with_grids(load_settings(params), grid), precision)
    quiet_environment()
    _log_finished_points(out)
    _start(run, settings, out_dir)


def _start(run: BenchRun, settings: Settings, out_dir: Path) -> None:
    """The oracles alone, or the table; a precision this CPU cannot run is one line."""
    from components.runtime import PrecisionError

    try:
        if run.oracles_only:
            return _train_oracles(run, settings)
        _run_and_save(run, settings, out_dir)
    except PrecisionError as e:  # the fix in this command's terms: its options, then params
        raise BenchError(
            f"{e.problem}; set fp32 with --precision (the methods) and --oracle-precision "
            "(Retrain), or rfa.precision / train.precision in the params file"
        ) from None


def _run_and_save(run: BenchRun, settings: Settings, out_dir: Path) -> None:
    from benchmarks.harness import run_bench

    started = stamp("bench")  # the code the points are computed by, before anyone edits it
    # Every write, after each method and at the end, carries the stamp: a stopped run's too.
    result = run_bench(run, settings, CACHE, out, lambda r: stamped(r, "bench", taken=started))
    typer.echo((out_dir / "results.md").read_text())
    out.print(f"{len(result['records'])} records -> {out_dir}/results.json")


def _train_oracles(run: BenchRun, settings: Settings) -> None:
    from benchmarks.harness import train_oracles

    for seed, path in train_oracles(run, settings, CACHE, out).items():
        out.print(f"seed {seed}: {path}.safetensors")


def _log_finished_points(console: Console) -> None:
    """One timed line per finished point (benchmarks/points.py) and per oracle epoch
    (benchmarks/cache.py). Written to a file, rich's live bar shows nothing until the run ends,
    and a table runs for hours."""
    import logging

    from rich.logging import RichHandler

    log = logging.getLogger("benchmarks")  # points.py's finished points, cache.py's oracles
    if log.handlers:
        return
    if console.is_terminal:
        timed = dict(omit_repeated_times=False, log_time_format="%H:%M:%S")
        handler: logging.Handler = RichHandler(
            console=console, show_level=False, show_path=False, **timed
        )
    else:  # piped: rich would pad every line to the console's width (250 columns, cli_common)
        handler = logging.StreamHandler(console.file)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def with_grids(settings: Settings, pairs: list[str]) -> Settings:
    """`settings` with each `--grid method=lr,lr,...` replacing that method's grid, validated as
    the params file's own grids are (log-spaced, five points or more)."""
    from pydantic import ValidationError

    from components.settings import BenchSettings

    grids = dict(settings.bench.grids)
    for pair in pairs:
        name, sep, values = pair.partition("=")
        try:
            if not sep or name not in grids:
                raise ValueError
            grids[name] = tuple(float(v) for v in values.split(","))
        except ValueError:
            raise BenchError(
                f"--grid {pair!r}: expected method=lr,lr,... for one of {', '.join(sorted(grids))}"
            ) from None
    try:
        bench = BenchSettings.model_validate({**settings.bench.model_dump(), "grids": grids})
    except ValidationError as e:
        raise BenchError(f"--grid: {_first_error(e).removeprefix('--')}") from None
    return settings.model_copy(update={"bench": bench})


def with_precision(settings: Settings, precision: str | None) -> Settings:
    """`settings` with `--precision` as rfa.precision, which `unlearn bench` runs every method
    under (None: the params file's)."""
    from components.runtime import PRECISIONS

    if precision is None:
        return settings
    if precision not in PRECISIONS:
        raise BenchError(f"--precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    return settings.model_copy(
        update={"rfa": settings.rfa.model_copy(update={"precision": precision})}
    )


def _first_error(e: Exception) -> str:
    errors = getattr(e, "errors", None)
    if callable(errors):
        first = errors()[0]
        msg = first["msg"].removeprefix("Value error, ")
        if not first["loc"]:  # a rule across options (e.g. --seeds against --tune-seed)
            return msg
        return f"--{'.'.join(str(p) for p in first['loc']).replace('_', '-')}: {msg}"
    return str(e)


def bench_time(
    out_dir: Path = typer.Argument(..., help="A bench output folder (with results.json)."),
    seed: int = typer.Option(1, help="The seed whose forget set is timed (not the tuning seed)."),
    data_dir: Path | None = typer.Option(None, help="The table's dataset folder (npz datasets)."),
    checkpoint: Path | None = typer.Option(
        None, help="The table's pre-trained checkpoint, if any."
    ),
    params: Path = typer.Option(Path("params.yaml"), help="The params file the table ran with."),
    sample_seconds: float = typer.Option(
        0.0,
        min=0.0,
        help="Stop each run this many seconds in and project its whole time from "
        "its seconds per step (0: run each in full).",
    ),
    retrain_precision: str | None = typer.Option(
        None,
        help="fp32 | bf16 for the Retrain timed (default: the table's oracles'): bf16 times "
        "it as the methods ran where the table's oracles trained in fp32.",
    ),
    repeats: int = typer.Option(
        1,
        min=1,
        help="Run RFA, Retrain and FT (the methods a time target compares) this many times, "
        "in rounds, and keep each one's median run; ratios are taken within rounds.",
    ),
) -> None:
    """Time a finished table's methods again in one process: Retrain trained for it, then every
    method at its chosen lr, one after another; adds the section to results.json / results.md."""
    from pydantic import ValidationError

    from benchmarks.report_timing import timing_lines, with_section
    from benchmarks.timing import TimingError, bench_run_of, time_table
    from components.runtime import TRAIN_PRECISIONS, PrecisionError
    from components.settings import load_settings
    from pipelines.env import quiet_environment

    if retrain_precision is not None and retrain_precision not in TRAIN_PRECISIONS:
        raise typer.BadParameter(f"--retrain-precision must be one of {sorted(TRAIN_PRECISIONS)}")
    src = out_dir / "results.json"
    if not src.exists():
        raise BenchError(f"{src} not found; run `unlearn bench --out {out_dir}` first")
    result = json.loads(src.read_text())
    try:
        run = bench_run_of(result["config"], data_dir, checkpoint, seed)
    except (ValidationError, ValueError) as e:
        raise typer.BadParameter(_first_error(e)) from None
    quiet_environment()
    started = stamp("bench-time")  # the code that is timed, before anyone edits it
    # `bench --precision` overrides the params file's rfa.precision and the table records the
    # precision it ran: timed in the same, as the oracle recipe is taken from the table.
    precision = result["config"].get("rfa", {}).get("precision")
    settings = with_precision(load_settings(params), precision)
    try:  # another seed's timing stays beside this one; this seed's earlier one is replaced
        result = with_section(
            result,
            time_table(
                result, run, settings, CACHE, out, sample_seconds, retrain_precision, repeats
            ),
        )
    except TimingError as e:
        raise BenchError(str(e)) from None
    except PrecisionError as e:  # the table's precision is what is timed: not the user's to change
        raise BenchError(
            f"{e.problem}; this table is timed in the precision it ran in ({precision or 'auto'}"
            "; --retrain-precision for Retrain): time it on a CPU with those units or a GPU"
        ) from None
    save_results(out_dir, stamped(result, "bench-time", taken=started))
    typer.echo("\n".join(timing_lines(result)))


def bench_report(
    out_dir: Path = typer.Argument(..., help="A bench output folder (with results.json)."),
    notes: Path | None = typer.Option(
        None, help="Markdown appended as the Notes section: what was tried for a missed target."
    ),
) -> None:
    """Re-render results.md from results.json (e.g. after writing the notes of a run)."""
    src = out_dir / "results.json"
    if not src.exists():
        raise BenchError(f"{src} not found; run `unlearn bench --out {out_dir}` first")
    text = notes.read_text() if notes else ""
    write_atomic(out_dir / "results.md", render_markdown(json.loads(src.read_text()), text))
    typer.echo((out_dir / "results.md").read_text())


def bench_merge(
    out_dir: Path = typer.Argument(..., help="Folder for the merged results.json / results.md."),
    runs: list[Path] = typer.Argument(
        ..., help="Bench output folders of one configuration, other seeds or other methods."
    ),
    notes: Path | None = typer.Option(None, help="Markdown appended as the Notes section."),
) -> None:
    """Merge bench runs of one configuration that covered different seeds or different methods
    (each with the seeds' Retrain, which must agree) into one table."""
    from benchmarks.merge import MergeError, merge_results

    loaded = []
    for run in runs:
        src = run / "results.json"
        if not src.exists():
            raise BenchError(f"{src} not found; each folder must hold a bench run's results.json")
        loaded.append((str(run), json.loads(src.read_text())))
    try:
        merged = merge_results(loaded)
    except MergeError as e:
        raise BenchError(str(e)) from None
    save_results(out_dir, stamped(merged, "bench-merge"), notes.read_text() if notes else "")
    typer.echo((out_dir / "results.md").read_text())


def bench_summary(
    readme: Path = typer.Option(Path("benchmarks/README.md"), help="The page with the markers."),
    results: Path = typer.Option(Path("benchmarks/results"), help="Folder of the tables."),
    check: bool = typer.Option(
        False, help="Write nothing; exit 1 if the page's section differs from the tables."
    ),
) -> None:
    """Render benchmarks/README.md's headline (RFA's targets by table, each table's key rows) from
    the current tables' results.json, between its summary markers."""
    from benchmarks.summary import SummaryError, load, render, with_summary

    if not readme.exists():
        raise BenchError(f"{readme} not found")
    try:
        text = readme.read_text()
        new = with_summary(text, render(load(results)))
    except SummaryError as e:
        raise BenchError(str(e)) from None
    if check:
        if new != text:
            typer.echo(f"{readme}'s summary differs from the tables; run `unlearn bench-summary`")
            raise typer.Exit(1)
        typer.echo(f"{readme}'s summary matches the tables")
        return
    write_atomic(readme, new)
    typer.echo(f"wrote the summary into {readme}")
