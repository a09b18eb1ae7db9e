from components.gates import evaluate_gates
from components.settings import GateSettings

ORIG = {"acc_dr": 100.0, "acc_df": 100.0, "acc_dt": 98.0, "acc_drt": 98.0, "acc_dft": 99.0, "mia_efficacy": 2.0,
        "mia_heldout": 10.0, "loss_mia_auc": 0.6, "retain_leakage": 51.0, "n_forget": 100.0, "n_test": 400.0,
        "n_heldout": 300.0, "n_forget_test": 45.0}


def _new(**kw):
    return {**ORIG, **kw}


def test_class_gates_pass_on_good_unlearning():
    r = evaluate_gates("class", ORIG, _new(acc_df=0.0, acc_dft=0.0, mia_efficacy=100.0, loss_mia_auc=0.5, acc_drt=97.5), GateSettings())
    assert r.passed, r.failures


def test_class_gates_catch_each_failure():
    good = dict(acc_df=0.0, acc_dft=0.0, mia_efficacy=100.0, loss_mia_auc=0.5)
    cases = {"retained_utility": dict(acc_drt=96.9), "retain_fit": dict(acc_dr=98.5), "forget_train": dict(acc_df=2.0),
             "forget_test": dict(acc_dft=1.5), "mia_efficacy": dict(mia_efficacy=94.0), "retain_leakage": dict(retain_leakage=70.0),
             "loss_mia_auc": dict(loss_mia_auc=0.9)}
    for gate, bad in cases.items():
        r = evaluate_gates("class", ORIG, _new(**{**good, **bad}), GateSettings())
        assert [g.name for g in r.results if not g.passed] == [gate]


def test_sample_gates_and_noise_allowance_is_recorded():
    cfg = GateSettings()
    ok = evaluate_gates("sample", ORIG, _new(acc_df=97.0, mia_efficacy=9.0, loss_mia_auc=0.51), cfg)
    assert ok.passed, ok.failures
    over = evaluate_gates("sample", ORIG, _new(acc_df=100.0, acc_dt=97.0), cfg)
    assert over.failures == ["forget_gap: 3 not <= 2.5"]
    mia = next(g for g in ok.results if g.name == "mia_efficacy_gap")
    assert mia.allowance > 0 and mia.to_dict()["effective_threshold"] == mia.threshold + mia.allowance
    strict = evaluate_gates("sample", ORIG, _new(acc_df=97.0, mia_efficacy=5.0, loss_mia_auc=0.51), cfg.model_copy(update={"noise_z": 0.0}))
    assert [g.name for g in strict.results if not g.passed] == ["mia_efficacy_gap"]


def test_missing_metric_fails_rather_than_passes():
    r = evaluate_gates("class", ORIG, _new(acc_df=0.0, acc_dft=None, mia_efficacy=100.0, loss_mia_auc=0.5), GateSettings())
    assert not r.passed and "forget_test: n/a" in r.failures[0]
