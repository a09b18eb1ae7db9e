"""results.json -> results.md: mean ± std per method, gaps to Retrain, time ratios, targets met."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks import bars
from benchmarks.provenance import machine_line, provenance_line
from benchmarks.report_timing import TIME_LIMITS, timing_lines
from benchmarks.report_tuning import edge_choices, tuning_line
from components.files import write_atomic

COLUMNS = (
    ("acc_df", "Acc(Df)"),
    ("acc_dr", "Acc(Dr)"),
    ("acc_dt", "Acc(Dt)"),
    ("acc_drt", "Acc(Drt)"),
    ("acc_dft", "Acc(Dft)"),
    ("mia_efficacy", "MIA-eff."),
    ("loss_mia_auc", "loss-MIA AUC"),
    ("probe_acc_dft", "probe Dft"),
    ("act_dist_dt", "act.dist Dt"),
    ("js_df", "JS Df"),
    ("seconds", "seconds"),
    ("cpu_seconds", "CPU s"),
    ("trainable_fraction", "trainable"),
)
# Probes RFA is not trained against: shown (after the linear probe) where a run measured them.
HARDER_PROBES = (
    ("knn_acc_dft", "kNN probe Dft"),
    ("mlp_acc_dft", "MLP probe Dft"),
    ("early_probe_acc_dft", "early probe Dft"),
)
# The per-example LiRA attack (sample scenario, `--lira-shadows`): after the loss attack.
LIRA = (("lira_auc", "LiRA AUC"), ("lira_tpr", "LiRA TPR@1%FPR"))


def columns(result: dict) -> tuple[tuple[str, str], ...]:
    recs = result["records"]

    def measured(cols: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        return tuple(c for c in cols if any(r.get(c[0]) is not None for r in recs))

    keys = [k for k, _ in COLUMNS]
    i, j = keys.index("loss_mia_auc") + 1, keys.index("probe_acc_dft") + 1
    return COLUMNS[:i] + measured(LIRA) + COLUMNS[i:j] + measured(HARDER_PROBES) + COLUMNS[j:]


def _ms(values: list) -> str:
    vals = [v for v in values if v is not None]
    if not vals:
        return "–"
    m, s = float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    fmt = "{:.3f}" if abs(m) < 1 else "{:.2f}"
    return fmt.format(m) + (f" ± {fmt.format(s)}" if len(vals) > 1 else "")


def avg_gap(rec: dict, oracle: dict) -> float:
    """Average absolute gap to Retrain over UA, RA, TA and MIA-efficacy (SalUn's summary)."""
    pairs = [
        (100 - rec["acc_df"], 100 - oracle["acc_df"]),
        (rec["acc_dr"], oracle["acc_dr"]),
        (rec["acc_dt"], oracle["acc_dt"]),
        (rec["mia_efficacy"], oracle["mia_efficacy"]),
    ]
    return float(np.mean([abs(a - b) for a, b in pairs]))


def _ratios(recs: list[dict], ref: dict[int, dict], unit: str) -> list[float]:
    """recs' `unit` over the same seed's reference record's, where both were measured."""
    return [
        r[unit] / ref[r["seed"]][unit]
        for r in recs
        if r["seed"] in ref and r.get(unit) is not None and ref[r["seed"]].get(unit)
    ]


def summarise(result: dict) -> dict[str, dict]:
    by_method: dict[str, list[dict]] = defaultdict(list)
    for r in result["records"]:
        by_method[r["method"]].append(r)
    oracle = {r["seed"]: r for r in by_method.get("retrain", []) if not r.get("diverged")}
    ft = {r["seed"]: r for r in by_method.get("ft", []) if not r.get("diverged")}
    out = {}
    for method, recs in by_method.items():
        row_diverged = sum(1 for r in recs if r.get("diverged"))
        recs = [r for r in recs if not r.get("diverged")]
        row = {k: [r.get(k) for r in recs] for k, _ in (*COLUMNS, *HARDER_PROBES, *LIRA)}
        row["seed"] = [r["seed"] for r in recs]
        row["gap"] = [avg_gap(r, oracle[r["seed"]]) for r in recs if r["seed"] in oracle]
        for key, unit in (("t", "seconds"), ("c", "cpu_seconds")):
            row[f"{key}_retrain"] = _ratios(recs, oracle, unit)
            row[f"{key}_ft"] = _ratios(recs, ft, unit)
        row["diverged"] = row_diverged
        out[method] = row
    return out


def _seeds(xs: list, fmt: str = "{:.1f}", scale: float = 1.0) -> str:
    """' (a / b / c by seed)' when more than one seed: a mean can hide one seed that misses."""
    vals = [x for x in xs if x is not None]
    return f" ({' / '.join(fmt.format(scale * v) for v in vals)} by seed)" if len(vals) > 1 else ""


INTERVAL_KEYS = (
    ("gap", "gap to Retrain"),
    ("acc_df", "Acc(Df)"),
    ("acc_dt", "Acc(Dt)"),
    ("mia_efficacy", "MIA-eff."),
)


def ci95(values: list) -> str:
    """mean [95 % t-interval] over seeds ("–" with fewer than two)."""
    from scipy.stats import t

    vals = [v for v in values if v is not None]
    if len(vals) < 2:
        return "–"
    m, sd = float(np.mean(vals)), float(np.std(vals, ddof=1))
    h = float(t.ppf(0.975, len(vals) - 1)) * sd / np.sqrt(len(vals))
    return f"{m:.2f} [{m - h:.2f}, {m + h:.2f}]"


def intervals(rows: dict[str, dict], order: list[str]) -> list[str]:
    """The key numbers' 95 % t-intervals over seeds (none with a single seed)."""
    if not any(len(rows[m]["seed"]) > 1 for m in order):
        return []
    head = ["method"] + [label for _, label in INTERVAL_KEYS]
    lines = ["", "Mean and 95 % t-interval over seeds:", ""]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in order:
        cells = [m] + [ci95(rows[m].get(k, [])) for k, _ in INTERVAL_KEYS]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


Target = tuple[str, bool | None, str]  # (target, met? (None: cannot be judged here), measured)


def mean_of(xs: list) -> float | None:
    vals = [x for x in (xs or []) if x is not None]
    return float(np.mean(vals)) if vals else None


def targets(result: dict, rows: dict[str, dict]) -> list[Target]:
    """RFA's targets (docs/method.md), each (target, met?, measured)."""
    if "rfa" not in rows:
        return []
    r = rows["rfa"]
    share = mean_of(r["trainable_fraction"])
    out: list[Target] = [
        ("RFA trains ≤ 5 % of the parameters", share is not None and share <= 0.05,
         f"{100 * share:.2f} %"),
    ]  # fmt: skip
    scenario = _class_targets if result["config"]["scenario"] == "class" else _sample_targets
    judged = not loaded_runs(result)
    return out + scenario(rows) + _gap_targets(rows) + _time_targets(r, judged)


def _class_targets(rows: dict[str, dict]) -> list[Target]:
    r, o = rows["rfa"], rows.get("original", {})
    dft, drt, mia = mean_of(r["acc_dft"]), mean_of(r["acc_drt"]), mean_of(r["mia_efficacy"])
    drt0 = mean_of(o["acc_drt"])
    out: list[Target] = [
        (f"Acc(Dft) ≤ {bars.DFT_MAX:g} %", bars.forgot_class(dft), f"{dft:.2f}"),
        (f"Acc(Drt) ≥ original − {bars.DRT_DROP_MAX:g}", bars.kept_drt(drt, drt0),
         f"{drt:.2f} vs {drt0:.2f}" + _seeds(r["acc_drt"], "{:.2f}")),
        (f"MIA-efficacy ≥ {bars.MIA_EFFICACY_MIN:g}",
         mia is not None and mia >= bars.MIA_EFFICACY_MIN, f"{mia:.2f}"),
    ]  # fmt: skip
    if "retrain" in rows:
        for key, label in (("probe_acc_dft", "linear probe"), *HARDER_PROBES):
            if (
                mean_of(r.get(key, [])) is not None
                and mean_of(rows["retrain"].get(key, [])) is not None
            ):
                out.append(_probe_target(r, rows["retrain"], key, label))
    return out


def _probe_target(r: dict, oracle: dict, key: str, label: str) -> Target:
    """RFA's probe accuracy on Dft near the oracle's (bars.PROBE_WITHIN; per-seed differences)."""
    p, po = mean_of(r[key]), mean_of(oracle[key])
    by_seed = dict(zip(oracle["seed"], oracle[key], strict=True))
    diffs = [
        a - by_seed[s]
        for s, a in zip(r["seed"], r[key], strict=True)
        if a is not None and by_seed.get(s) is not None
    ]
    name = "feature probe" if key == "probe_acc_dft" else label.removesuffix(" Dft")
    said = f"{p:.2f} vs oracle {po:.2f}" + _seeds(diffs, "{:+.1f} pt")
    return (
        f"{name} on Dft within {bars.PROBE_WITHIN:g} pt of the oracle's",
        bars.probe_near(p, po),
        said,
    )


def _sample_targets(rows: dict[str, dict]) -> list[Target]:
    r = rows["rfa"]
    if not r["gap"]:
        return []
    g = mean_of(r["gap"])
    limit = bars.SAMPLE_GAP_MAX
    out: list[Target] = [(f"average gap to Retrain ≤ {limit:.1f}", g <= limit, f"{g:.2f}")]
    for other in ("ft", "neggrad"):
        if rows.get(other, {}).get("gap"):
            go = mean_of(rows[other]["gap"])
            out.append((f"gap smaller than {other}'s", g < go, f"{g:.2f} vs {go:.2f}"))
    return out


def _gap_targets(rows: dict[str, dict]) -> list[Target]:
    r, o = rows["rfa"], rows.get("original", {})
    out: list[Target] = []
    others = {
        m: mean_of(row["gap"])
        for m, row in rows.items()
        if m not in ("original", "retrain", "rfa") and row["gap"]
    }
    if r["gap"] and others:
        g = mean_of(r["gap"])
        best, smallest = bars.smallest_gap(g, others)
        out.append(("gap to Retrain ≤ every baseline's", smallest,
                    f"{g:.2f} vs {best} {others[best]:.2f}"))  # fmt: skip
    # A sanity row: on a base that barely memorises, leaving the model untouched can already meet
    # "gap ≤ 2.0" and beat baselines that damage Dr; this says whether RFA did better than nothing.
    if r["gap"] and o.get("gap"):
        g, go = mean_of(r["gap"]), mean_of(o["gap"])
        out.append(("gap smaller than the untouched original's (did it forget?)",
                    bars.below_original(g, go),
                    f"{g:.3f} vs {go:.3f}"))  # fmt: skip
    return out


def load_limit(config: dict) -> float:
    """The 1-minute load above which a run shared its cores: its own threads + 0.5."""
    return config.get("torch_threads", 1) + 0.5


def loaded_runs(result: dict) -> list[str]:
    """Runs that finished with more load on the machine than their own threads (1-minute load
    average above torch_threads + 0.5): their seconds measure the other processes too. A run with
    no seconds (an oracle trained on another device) times nothing, so it is not listed."""
    limit = load_limit(result["config"])
    return [
        f"{r['method']}@seed{r['seed']} ({r['load_1m']:.1f})"
        for r in result["records"]
        if r.get("seconds") is not None and r.get("load_1m") is not None and r["load_1m"] > limit
    ]


def _time_targets(r: dict, judged: bool = True) -> list[Target]:
    """Wall seconds are the target's measure; CPU seconds (same runs) are shown beside them
    because on a shared machine the wall ratio also measures how the load changed between runs.
    Timed under load (`loaded_runs`), they are shown and not judged."""
    out: list[Target] = []
    for key, unit in (("t", ""), ("c", ", CPU seconds")):
        for ref, name in (("retrain", "Retrain"), ("ft", "FT")):
            limit = TIME_LIMITS[ref]
            ratios = r[f"{key}_{ref}"]
            if ratios:
                t = mean_of(ratios)
                out.append((f"time ≤ {100 * limit:.0f} % of {name}'s{unit}",
                            t <= limit if judged else None,
                            f"{100 * t:.2f} %" + _seeds(ratios, "{:.1f} %", 100)))  # fmt: skip
    return out


def _hardware(cfg: dict) -> str:
    """Device, threads and every method's precision, where the run recorded one (the tables
    before it ran every method in fp32 on the CPU)."""
    where = f"device {cfg['device']} ({cfg['torch_threads']} threads)"
    return where + (f", every method in {cfg['precision']}" if "precision" in cfg else "")


def save_results(out_dir: Path, result: dict, notes: str | None = None) -> dict:
    """results.json and results.md, each written whole or not at all (a kill leaves the old
    table or the new); results.md keeps its Notes section unless `notes` is given."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md = out_dir / "results.md"
    notes = kept_notes(md) if notes is None else notes
    write_atomic(out_dir / "results.json", json.dumps(result, indent=1) + "\n")
    write_atomic(md, render_markdown(result, notes))
    return result


def kept_notes(md: Path) -> str:
    """The Notes section of an existing results.md, kept as written when the table re-renders
    (`unlearn bench` over a finished table, `bench-time`); "" when there is none."""
    return md.read_text().partition("\n## Notes\n")[2] if md.exists() else ""


def render_markdown(result: dict, notes: str = "") -> str:
    """The table, the targets and, when given, notes (what was tried for a missed target)."""
    cfg = result["config"]
    rows = summarise(result)
    what = (
        f"class {cfg['forget_class']}"
        if cfg["scenario"] == "class"
        else f"{100 * cfg['fraction']:.0f} % random samples"
    )
    lines = [
        f"# {cfg['dataset']} / {cfg['model']} — {what}",
        "",
        (
            f"Seeds {cfg['seeds']}, {_hardware(cfg)}. Mean "
            "± sample standard deviation over seeds; "
            "accuracies, MIA-efficacy and the probe in percent. Gap = mean |Δ| to Retrain over UA, "
            "RA, TA, MIA-efficacy. "
            "Time ratios use the same seed's Retrain and FT; wall seconds, and CPU seconds of the "
            "process where recorded (less sensitive to other processes than wall seconds, not "
            "immune: they share cores and caches)."
        ),
        "",
    ]
    header = (
        ["method"]
        + [label for _, label in columns(result)]
        + ["gap to Retrain", "time / Retrain", "time / FT", "CPU / Retrain", "CPU / FT"]
    )
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    order = ["original", "retrain", "rfa"] + sorted(
        m for m in rows if m not in ("original", "retrain", "rfa")
    )
    for m in [m for m in order if m in rows]:
        r = rows[m]
        cells = (
            [m + (f" ({r['diverged']} diverged)" if r["diverged"] else "")]
            + [_ms(r[k]) for k, _ in columns(result)]
            + [_ms(r[k]) for k in ("gap", "t_retrain", "t_ft", "c_retrain", "c_ft")]
        )
        lines.append("| " + " | ".join(cells) + " |")
    lines += intervals(rows, [m for m in order if m in rows])
    if cfg.get("tuning"):
        lines += ["", tuning_line(cfg)]
    elif cfg.get("lr_chosen"):
        lines += [
            "",
            "Baseline learning rates chosen from the grid (closest to Retrain): "
            + ", ".join(f"{k} = {v}" for k, v in sorted(cfg["lr_chosen"].items())),
        ]
    lines += _run_lines(result)
    edges = edge_choices(result)
    if edges:
        lines += ["", "**At a grid end** (not bracketed, unless tied: then the gap does not move "
                  "with the lr there): " + ", ".join(edges)]  # fmt: skip
    t = targets(result, rows)
    if t:
        lines += [
            "",
            "## Targets (issue 3) for RFA",
            "",
            "| target | met | measured |",
            "|---|---|---|",
        ]
        lines += [
            f"| {name} | {'yes' if ok else 'MISSED' if ok is False else '–'} | {val} |"
            for name, ok, val in t
        ]
    if notes.strip():
        lines += ["", "## Notes", "", notes.strip()]
    return "\n".join(lines) + "\n"


def _run_lines(result: dict) -> list[str]:
    """How the run went: runs timed under load, points read back, the one-process timing, and
    the code that computed it."""
    cfg, lines = result["config"], []
    loaded = loaded_runs(result)
    if loaded:
        lines += ["", "**Timed under load** (1-minute load average above the run's "
                  f"{cfg.get('torch_threads', 1)} threads + 0.5 when it ended; time targets shown, "
                  "not judged): " + ", ".join(loaded)]  # fmt: skip
    reused = cfg.get("points", {}).get("reused")
    if reused:
        lines += ["", f"**Resumed**: {reused} grid points or records were finished by an earlier "
                  "run of this configuration and read back (`.cache/bench/points/"
                  f"{cfg['points']['folder']}`); their seconds are that run's."]  # fmt: skip
    lines += timing_lines(result)
    stamps = (provenance_line(result), machine_line(result))
    return lines + [x for line in stamps if line for x in ("", line)]
