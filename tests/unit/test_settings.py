from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from components.settings import Settings, SettingsError, load_settings, parse_settings

ROOT = Path(__file__).resolve().parents[2]


def test_project_params_parse_and_are_frozen():
    s = load_settings(ROOT / "params.yaml")
    assert s.data.source == "digits"
    assert s.rfa.scenario("class").target == "masked_nearest_class"
    with pytest.raises(ValidationError, match="frozen"):
        s.lora.rank = 99


def test_bad_value_names_dotted_path():
    with pytest.raises(SettingsError, match=r"lora\.rank"):
        parse_settings({"lora": {"rank": 0}})


def test_nested_bad_value_names_full_path():
    with pytest.raises(SettingsError, match=r"rfa\.sample_unlearning\.forget_batch"):
        parse_settings(
            {"rfa": {"sample_unlearning": {"target": "margin_quantile", "forget_batch": -1}}}
        )


def test_forget_focus_is_a_share_of_the_batch():
    with pytest.raises(SettingsError, match=r"rfa\.sample_unlearning\.forget_focus"):
        parse_settings(
            {"rfa": {"sample_unlearning": {"target": "margin_quantile", "forget_focus": 1.5}}}
        )
    assert (
        parse_settings({}).rfa.sample_unlearning.forget_focus == 0.0
    )  # off unless a params file asks


def test_target_refresh_is_a_step_count_off_by_default():
    with pytest.raises(SettingsError, match=r"rfa\.sample_unlearning\.target_refresh"):
        parse_settings(
            {"rfa": {"sample_unlearning": {"target": "margin_quantile", "target_refresh": -5}}}
        )
    assert parse_settings({}).rfa.sample_unlearning.target_refresh == 0


def test_unknown_key_is_refused():
    with pytest.raises(SettingsError, match=r"train\.epoch"):
        parse_settings({"train": {"epoch": 3}})


def test_malformed_yaml_names_line(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("train:\n  epochs: [1,\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(p)


def test_missing_file():
    with pytest.raises(SettingsError, match="no such params file"):
        load_settings("/nonexistent/params.yaml")


def test_split_fractions_must_leave_training_data():
    with pytest.raises(SettingsError, match="data"):
        parse_settings({"data": {"test_fraction": 0.6, "heldout_fraction": 0.4}})


def test_defaults_match_project_params():
    # The code defaults and params.yaml agree, so a missing section means the documented value.
    assert load_settings(ROOT / "params.yaml") == Settings()


def test_a_moved_key_says_where_it_lives_now():
    """rfa.retain_ce_weight became per scenario: an older params file is told where to put it."""
    with pytest.raises(
        SettingsError,
        match=r"rfa\.retain_ce_weight has moved; set rfa\.class_unlearning\.retain_ce_weight",
    ):
        parse_settings({"rfa": {"retain_ce_weight": 1.0}})
    ok = parse_settings(
        {"rfa": {"class_unlearning": {"target": "masked_nearest_class", "retain_ce_weight": 1.0}}}
    )
    assert (
        ok.rfa.class_unlearning.retain_ce_weight == 1.0
        and ok.rfa.sample_unlearning.retain_ce_weight == 0.0
    )


def test_the_bench_section_is_typed_with_a_recipe_and_a_log_grid_per_baseline():
    grid = [0.001, 0.002, 0.004, 0.008, 0.016]
    s = parse_settings({"bench": {"grids": {"ft": grid}, "recipes": {"ft": {"epochs": 3}}}})
    assert s.bench.grids == {"ft": tuple(grid)} and s.bench.recipes == {"ft": {"epochs": 3}}
    assert s.bench.evaluation.retain_eval_max == 5000  # the bench scores on more than the gates
    with pytest.raises(SettingsError, match="bench.recipes has no entry for rl"):
        parse_settings({"bench": {"grids": {"rl": grid}, "recipes": {"ft": {"epochs": 1}}}})
    with pytest.raises(SettingsError, match="bench.recipes.ft.epochs"):
        parse_settings({"bench": {"grids": {"ft": grid}, "recipes": {"ft": {"epochs": 0}}}})
    with pytest.raises(SettingsError, match="bench.recipes.ft.epoch: Extra inputs"):
        parse_settings({"bench": {"grids": {"ft": grid}, "recipes": {"ft": {"epoch": 2}}}})
    for bad in ([0.01, 0.04], [0.001, 0.002, 0.004, 0.008, 0.01], grid[::-1]):
        with pytest.raises(SettingsError, match="at least 5 increasing, log-spaced"):
            parse_settings({"bench": {"grids": {"ft": bad}, "recipes": {"ft": {}}}})
    with pytest.raises(SettingsError, match="bench.baseline.lr"):
        parse_settings({"bench": {"baseline": {"lr": -1}}})


def test_the_committed_bench_params_files_parse_and_declare_their_bench_section():
    for path in sorted((ROOT / "benchmarks" / "params").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        assert "data" not in raw, path  # the bench builds its own splits: a data section is dead
        assert set(raw["bench"]) >= {"grids", "recipes", "evaluation", "probe_layer"}, path
        assert load_settings(path).bench.probe_layer == "pool"


def test_tune_overrides_go_through_the_same_validation():
    from benchmarks.tune import with_overrides

    raw = yaml.safe_load((ROOT / "benchmarks" / "params" / "cifar10.yaml").read_text())
    s = with_overrides(raw, ["lora.rank=8", "rfa.class_unlearning.lr=0.002"])
    assert (s.lora.rank, s.rfa.class_unlearning.lr) == (8, 0.002)
    assert s.rfa.class_unlearning.probe_weight == raw["rfa"]["class_unlearning"]["probe_weight"]
    assert raw["lora"]["rank"] == 3  # the caller's mapping is left as it was
    with pytest.raises(SettingsError, match="rfa.retain_bach"):
        with_overrides({}, ["rfa.retain_bach=3"])
    with pytest.raises(SettingsError, match="expected dotted.key=value"):
        with_overrides({}, ["lora.rank"])
