"""benchmarks/README.md's headline: the current tables' key numbers and RFA's targets, rendered from
their results.json by `unlearn bench-summary`, so the page cannot drift from the tables."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from benchmarks import bars
from benchmarks.report import HARDER_PROBES, ci95, mean_of, summarise
from benchmarks.report_timing import TIME_LIMITS, rfa_time_verdict, sections, share
from benchmarks.report_tuning import edge_choices

# The tables the README reports, in its order (folders under benchmarks/results/).
TABLES = (
    "cifar10-resnet20-sample10-merged",
    "cifar10-resnet20-class0-merged",
    "fashion_mnist-sample10-merged",
    "fashion_mnist-class0-merged",
    "digits-sample10",
    "digits-class0",
)
ORDER = ("original", "retrain", "rfa", "ft", "neggrad", "rl", "salun", "scrub")
BEGIN = "<!-- summary: `unlearn bench-summary` writes from here to the end marker; do not edit -->"
END = "<!-- end of summary -->"
PROBES = (("probe_acc_dft", "linear"), *((k, label.split()[0]) for k, label in HARDER_PROBES))
COLUMNS = {
    "sample": (("acc_dr", "Acc(Dr)"), ("acc_df", "Acc(Df)"), ("acc_dt", "Acc(Dt)"),
               ("mia_efficacy", "MIA-eff."), ("lira_auc", "LiRA AUC")),
    "class": (("acc_dr", "Acc(Dr)"), ("acc_drt", "Acc(Drt)"), ("acc_dft", "Acc(Dft)"),
              ("mia_efficacy", "MIA-eff."), ("loss_mia_auc", "loss-MIA AUC")),
}  # fmt: skip


Check = tuple[str, bool | None, str]  # (target, met? (None: not judged), measured)


class SummaryError(ValueError):
    """The README has no summary markers, or a table is missing (one `error:` line)."""


def load(results: Path) -> dict[str, dict]:
    """Each reported table's results.json, by folder name."""
    out = {}
    for name in TABLES:
        src = results / name / "results.json"
        if not src.exists():
            raise SummaryError(f"{src} not found; the summary reports every table in TABLES")
        result = json.loads(src.read_text())
        lacking = sorted({"original", "retrain", "rfa"} - {r["method"] for r in result["records"]})
        if lacking:
            raise SummaryError(f"{src} has no {', '.join(lacking)} records; the summary compares "
                               "RFA with the original and Retrain")  # fmt: skip
        out[name] = result
    return out


def render(tables: dict[str, dict]) -> str:
    """The headline section: RFA's targets across the tables, then each table's rows."""
    rows = {name: summarise(result) for name, result in tables.items()}  # once per table
    lines = [
        BEGIN,
        "",
        _wrap(f"Mean over the reported seeds {_seeds(tables)}, scored on the report split. "
              "Each table's results.md has every column, the standard deviations and the chosen "
              "learning rates."),
        "",
        *_matrix(tables, rows),
        "",
        _wrap("In the tables below the gap carries its 95 % t-interval; time is each seed timed "
              "in its own quiet process (`bench-time`), as a share of that process's Retrain "
              "(Retrain's row: its seconds)."),
    ]  # fmt: skip
    for name, result in tables.items():
        lines += ["", *_table(name, result, rows[name])]
    return "\n".join([*lines, "", END])


def _seeds(tables: dict[str, dict]) -> str:
    """The seeds every table reports and the one they were tuned on, if they share them."""
    said = {(tuple(r["config"]["seeds"]), r["config"].get("tune_seed")) for r in tables.values()}
    if len(said) > 1:
        return "(each table's own: its results.md names them)"
    seeds, tune = said.pop()
    return f"({', '.join(map(str, seeds))}; tuned on {tune})"


def _wrap(text: str) -> str:
    return textwrap.fill(text, 100, break_on_hyphens=False)


def _matrix(tables: dict[str, dict], rows: dict[str, dict]) -> list[str]:
    """Targets (rows) by table (columns): met or **MISSED**, with what was measured."""
    said = {True: "met", False: "**MISSED**", None: "not judged"}
    cells = {
        name: {t: f"{said[ok]}: {m}" for t, ok, m in checks(r, rows[name])}
        for name, r in tables.items()
    }
    # Each scenario's own targets first, then those every table has.
    own = [t for name, r in tables.items() for t, _, _ in _scenario_checks(rows[name], r)]
    targets = list(dict.fromkeys([*own, *(t for c in cells.values() for t in c)]))
    head = ["target", *(_short(r["config"]) for r in tables.values())]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in targets:
        out.append("| " + " | ".join([t, *(c.get(t, "n/a") for c in cells.values())]) + " |")
    return out


def _what(cfg: dict) -> str:
    if cfg["scenario"] == "class":
        return f"class {cfg['forget_class']}"
    return f"{100 * cfg['fraction']:.0f} % random"


def _short(cfg: dict) -> str:
    return f"{cfg['dataset']} / {cfg['model']}, {_what(cfg)}"


def _title(name: str, cfg: dict) -> str:
    return f"### {_short(cfg)} (`results/{name}`)"


def _table(name: str, result: dict, rows: dict[str, dict]) -> list[str]:
    cfg = result["config"]
    cols = [c for c in COLUMNS[cfg["scenario"]] if _measured(rows, c[0])]
    probes = cfg["scenario"] == "class" and _measured(rows, "probe_acc_dft")
    head = ["method", "gap [95 % interval]", *(label for _, label in cols)]
    head += ["probes − Retrain's (" + " / ".join(p for _, p in PROBES) + ")"] if probes else []
    head += ["time / Retrain (seeds timed)"]
    out = [_title(name, cfg), "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    shares = _time_shares(result)
    for m in (m for m in ORDER if m in rows):
        r = rows[m]
        gap = ci95(r["gap"]) if m not in ("retrain",) else "0"
        cells = [m, gap, *(_num(mean_of(r[k])) for k, _ in cols)]
        cells += [_probe_deltas(r, rows["retrain"]) if m != "retrain" else "0"] if probes else []
        out.append("| " + " | ".join([*cells, shares.get(m, "–")]) + " |")
    return out


def _measured(rows: dict[str, dict], key: str) -> bool:
    return any(mean_of(r[key]) is not None for r in rows.values())


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.3f}" if abs(x) < 1 else f"{x:.2f}"


def _probe_deltas(r: dict, oracle: dict) -> str:
    deltas = [_delta(r, oracle, key) for key, _ in PROBES]
    return " / ".join("–" if d is None else f"{d:+.1f}" for d in deltas)


def _delta(r: dict, oracle: dict, key: str) -> float | None:
    a, b = mean_of(r.get(key, [])), mean_of(oracle.get(key, []))
    return None if a is None or b is None else a - b


def _time_shares(result: dict) -> dict[str, str]:
    """Per method, its seconds over Retrain's in each timed process ("a / b / c %"; with
    `--repeats`, as report_timing.share pairs them)."""
    timed = sections(result)
    seconds = [{r["method"]: r["seconds"] for r in t["runs"]} for t in timed]
    if not timed or not all("retrain" in t for t in seconds):
        return {}
    out = {"retrain": " / ".join(_seconds(t["retrain"]) for t in seconds)}
    for m in ORDER:
        if m != "retrain" and all(m in t for t in seconds):
            out[m] = " / ".join(f"{100 * share(t, m, 'retrain'):.1f}" for t in timed) + " %"
    return out


def _seconds(x: float) -> str:
    return f"{x:,.0f} s" if x >= 100 else f"{x:.1f} s"  # a digits Retrain is a few seconds


def checks(result: dict, rows: dict[str, dict] | None = None) -> list[Check]:
    """RFA's targets of issue 20 on one table, and whether the baselines kept Dr."""
    rows = summarise(result) if rows is None else rows  # render passes the rows it computed
    common = _gap_checks(rows) + _time_check(result) + [_dr_check(rows), _oracle_check(rows)]
    return _scenario_checks(rows, result) + common + [_grid_check(result)]


def _scenario_checks(rows: dict[str, dict], result: dict) -> list[Check]:
    scenario = _class_checks if result["config"]["scenario"] == "class" else _sample_checks
    return scenario(rows)


def _sample_checks(rows: dict[str, dict]) -> list[Check]:
    g, limit = mean_of(rows["rfa"]["gap"]), bars.HEADLINE_GAP_MAX
    return [(f"gap ≤ {limit}", g <= limit, f"{g:.2f}")]


def _class_checks(rows: dict[str, dict]) -> list[Check]:
    r, o = rows["rfa"], rows["original"]
    dft, drt, drt0 = mean_of(r["acc_dft"]), mean_of(r["acc_drt"]), mean_of(o["acc_drt"])
    out = [
        (f"Acc(Dft) ≤ {bars.DFT_MAX:g}", bars.forgot_class(dft), f"{dft:.2f}"),
        (
            f"Acc(Drt) ≥ the original's − {bars.DRT_DROP_MAX:g}",
            bars.kept_drt(drt, drt0),
            f"{drt:.2f} against {drt0:.2f}",
        ),
    ]
    deltas = {p: _delta(r, rows["retrain"], k) for k, p in PROBES}
    seen = {p: d for p, d in deltas.items() if d is not None}
    if seen:
        near = all(bars.probe_near(d, 0.0) for d in seen.values())
        said = ", ".join(f"{p} {d:+.1f}" for p, d in seen.items())
        out.append((f"every probe within {bars.PROBE_WITHIN:g} pt of Retrain's", near, said))
    return out


def _gap_checks(rows: dict[str, dict]) -> list[Check]:
    g = mean_of(rows["rfa"]["gap"])
    others = {m: mean_of(rows[m]["gap"]) for m in ORDER[3:] if m in rows}
    g0 = mean_of(rows["original"]["gap"])
    below = bars.below_original(g, g0)
    out: list[Check] = [("below the untouched original's gap", below, f"{g:.2f} against {g0:.2f}")]
    if not others:  # a table run without baselines (`make bench METHODS=retrain,rfa`)
        return [("the smallest gap of the seven", None, "no baseline in this table"), *out]
    best, smallest = bars.smallest_gap(g, others)
    return [("the smallest gap of the seven", smallest,
             f"{g:.2f}; {best} {others[best]:.2f}" + _paired(rows["rfa"], rows[best], best)),
            *out]  # fmt: skip


def _paired(r: dict, other: dict, name: str) -> str:
    """RFA's gap minus `other`'s, seed by seed (same forget set, same Retrain), with its 95 %
    t-interval: whether three seeds order the two at all."""
    if r is other or len(r["gap"]) != len(r["seed"]) or len(other["gap"]) != len(other["seed"]):
        return ""  # the same row, or a seed without its Retrain: no pairs to take
    theirs = dict(zip(other["seed"], other["gap"], strict=True))
    diffs = [g - theirs[s] for s, g in zip(r["seed"], r["gap"], strict=True) if s in theirs]
    return f"; RFA − {name} by seed {ci95(diffs)}" if len(diffs) > 1 else ""


def _time_check(result: dict) -> list[Check]:
    verdict = rfa_time_verdict(sections(result))
    if verdict is None:
        return []
    ok, said, _ = verdict
    limit = 100 * TIME_LIMITS["retrain"]
    return [(f"time ≤ {limit:.0f} % of Retrain's on each seed timed", ok, said)]


def _dr_check(rows: dict[str, dict]) -> Check:
    dr0, limit = mean_of(rows["original"]["acc_dr"]), bars.DR_DROP_MAX
    drs = {m: mean_of(rows[m]["acc_dr"]) for m in ORDER[3:] if m in rows}
    far = [f"{m} {dr - dr0:+.1f}" for m, dr in drs.items() if not bars.kept_dr(dr, dr0, limit)]
    target = f"baselines' Acc(Dr) within {limit:g} points of the original's"
    if not drs:
        return (target, None, "no baseline in this table")
    return (target, not far,
            ", ".join(far) if far else f"all {len(drs)} (original {dr0:.2f})")  # fmt: skip


def _oracle_check(rows: dict[str, dict]) -> Check:
    """Issue 20's full oracle: Retrain fits Dr to within a point of the original (or better)."""
    dr, dr0 = mean_of(rows["retrain"]["acc_dr"]), mean_of(rows["original"]["acc_dr"])
    limit = bars.ORACLE_FIT_MAX
    return (f"Retrain's Acc(Dr) ≥ the original's − {limit:g} (a full oracle)",
            bars.kept_dr(dr, dr0, limit), f"{dr:.2f} against {dr0:.2f}")  # fmt: skip


def _grid_check(result: dict) -> Check:
    """Every method's lr inside its grid, or at an end it ties with other points (then the gap
    does not move with the lr there, so no better value lies past it)."""
    edges = edge_choices(result)
    open_ends = [e for e in edges if "tied with" not in e]
    return ("every method's lr inside its grid, or tied at its end", not open_ends,
            "; ".join(edges) if edges else "all inside")  # fmt: skip


def with_summary(readme: str, section: str) -> str:
    """`readme` with its summary section (markers included) replaced by `section`."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise SummaryError(f"no summary markers in the README; put {BEGIN!r} and {END!r} in it")
    return readme[:start] + section + readme[end + len(END) :]
