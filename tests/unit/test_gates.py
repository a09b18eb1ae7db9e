from components.gates import evaluate_gates
from components.settings import GateSettings

ORIG = {
    "acc_dr": 100.0,
    "acc_df": 100.0,
    "acc_dt": 98.0,
    "acc_drt": 98.0,
    "acc_dft": 99.0,
    "mia_efficacy": 2.0,
    "mia_unseen": 10.0,
    "loss_mia_auc": 0.6,
    "retain_leakage": 51.0,
    "n_forget": 100.0,
    "n_test": 400.0,
    "n_forget_test": 45.0,
    "n_retain_eval": 2000.0,
    "n_dt": 445.0,
    "n_dft": 45.0,
}
MIA3 = ("mia_efficacy", "mia_efficacy_entropy", "mia_efficacy_modified_entropy")
ORIG.update(
    {
        "mia_efficacy_entropy": 2.0,
        "mia_efficacy_modified_entropy": 2.0,
        **dict.fromkeys(
            ("mia_forget_cf", "mia_forget_cf_entropy", "mia_forget_cf_modified_entropy"), 2.0
        ),
        "mia_unseen_entropy": 10.0,
        "mia_unseen_modified_entropy": 10.0,
    }
)


def _new(**kw):
    # One value for mia_efficacy stands for all three attack features unless they are given.
    if "mia_efficacy" in kw:
        kw = {**dict.fromkeys(MIA3, kw["mia_efficacy"]), **kw}
    # The sample gate reads Df's rate under the cross-fitted attacks: the same value here.
    kw.update({k.replace("efficacy", "forget_cf"): v for k, v in kw.items() if k in MIA3})
    return {**ORIG, **kw}


def test_class_gates_pass_on_good_unlearning():
    r = evaluate_gates(
        "class",
        ORIG,
        _new(acc_df=0.0, acc_dft=0.0, mia_efficacy=100.0, loss_mia_auc=0.5, acc_drt=97.5),
        GateSettings(),
    )
    assert r.passed, r.failures


def test_class_gates_catch_each_failure():
    good = dict(acc_df=0.0, acc_dft=0.0, mia_efficacy=100.0, loss_mia_auc=0.5)
    # Past each threshold by more than its noise allowance (100 forget samples, 400 test images).
    cases = {
        "retained_utility": dict(acc_drt=94.0),
        "retain_fit": dict(acc_dr=98.0),
        "forget_train": dict(acc_df=6.0),
        "forget_test": dict(acc_dft=9.0),
        "mia_efficacy": dict(mia_efficacy=94.0),
        "retain_leakage": dict(retain_leakage=70.0),
        "loss_mia_auc": dict(loss_mia_auc=0.9),
    }
    for gate, bad in cases.items():
        r = evaluate_gates("class", ORIG, _new(**{**good, **bad}), GateSettings())
        assert [g.name for g in r.results if not g.passed] == [gate]


def test_sample_gates_and_noise_allowance_is_recorded():
    cfg = GateSettings()
    ok = evaluate_gates("sample", ORIG, _new(acc_df=97.0, mia_efficacy=9.0, loss_mia_auc=0.51), cfg)
    assert ok.passed, ok.failures
    over = evaluate_gates(
        "sample", ORIG, _new(acc_df=88.0), cfg
    )  # over-forgetting: 10 points under Dt
    assert [f.split(" not <= ")[0] for f in over.failures] == ["forget_gap: 10"]
    # 3 points on 100 forget samples is within the noise; on 5,000 it is not.
    assert evaluate_gates("sample", ORIG, _new(acc_df=100.0, acc_dt=97.0), cfg).passed
    big = {"n_forget": 5000.0, "n_dt": 5000.0}
    assert not evaluate_gates(
        "sample", {**ORIG, **big}, _new(acc_df=100.0, acc_dt=97.0, **big), cfg
    ).passed
    mia = next(g for g in ok.results if g.name == "mia_efficacy_gap")
    assert (
        mia.allowance > 0 and mia.to_dict()["effective_threshold"] == mia.threshold + mia.allowance
    )
    strict = evaluate_gates(
        "sample",
        ORIG,
        _new(acc_df=97.0, mia_efficacy=5.0, loss_mia_auc=0.51),
        cfg.model_copy(update={"noise_z": 0.0}),
    )
    assert [g.name for g in strict.results if not g.passed] == ["mia_efficacy_gap"]


def test_missing_metric_fails_rather_than_passes():
    r = evaluate_gates(
        "class",
        ORIG,
        _new(acc_df=0.0, acc_dft=None, mia_efficacy=100.0, loss_mia_auc=0.5),
        GateSettings(),
    )
    assert not r.passed and "forget_test: n/a" in r.failures[0]


def test_accuracy_gates_get_a_noise_allowance_so_one_image_does_not_decide():
    cfg = GateSettings()
    one_image = evaluate_gates(
        "class",
        ORIG,
        _new(acc_df=0.0, acc_dft=0.0, mia_efficacy=100.0, loss_mia_auc=0.5, acc_dr=98.95),
        cfg,
    )
    fit = next(g for g in one_image.results if g.name == "retain_fit")
    assert (
        fit.passed and 0.2 < fit.allowance < 1.0 and fit.kind == "utility"
    )  # 2,000 retained images: about 0.4 pt
    strict = evaluate_gates(
        "class",
        ORIG,
        _new(acc_df=0.0, acc_dft=0.0, mia_efficacy=100.0, loss_mia_auc=0.5, acc_dr=98.95),
        cfg.model_copy(update={"noise_z": 0.0}),
    )
    assert [g.name for g in strict.results if not g.passed] == ["retain_fit"]


def test_mia_gates_read_the_median_of_three_attack_features():
    good = dict(acc_df=0.0, acc_dft=0.0, loss_mia_auc=0.5)
    one_arbitrary = _new(
        **good, mia_efficacy=0.0, mia_efficacy_entropy=99.0, mia_efficacy_modified_entropy=97.0
    )
    r = evaluate_gates("class", ORIG, one_arbitrary, GateSettings())
    assert r.passed, r.failures
    assert next(g for g in r.results if g.name == "mia_efficacy").value == 97.0
    one_high = _new(
        **good, mia_efficacy=100.0, mia_efficacy_entropy=20.0, mia_efficacy_modified_entropy=30.0
    )
    assert evaluate_gates("class", ORIG, one_high, GateSettings()).failures == [
        "mia_efficacy: 30 not >= 95"
    ]
    sample = _new(acc_df=97.0, loss_mia_auc=0.51, mia_efficacy=9.0, mia_efficacy_entropy=40.0)
    gate = next(
        g
        for g in evaluate_gates("sample", ORIG, sample, GateSettings()).results
        if g.name == "mia_efficacy_gap"
    )
    assert (
        gate.value == 1.0 and gate.passed
    )  # gaps 1 / 30 / 1: the one far-off feature does not decide


def test_forgetting_passed_tells_whether_the_base_already_met_the_forgetting_gates():
    cfg = GateSettings()
    assert not evaluate_gates("class", ORIG, ORIG, cfg).forgetting_passed
    already = _new(
        acc_df=97.0, loss_mia_auc=0.5, mia_efficacy=10.0
    )  # Df looks unseen before any unlearning
    assert evaluate_gates("sample", already, already, cfg).forgetting_passed


def test_class_mia_gate_compares_df_with_the_forgotten_class_unseen_images():
    """Fashion-MNIST, a 3-epoch base that barely overfits: Df and Dft both at 0 % accuracy, but the
    attacks call the class's never-seen test images member as often as Df (median 38.8 vs 40)."""
    good = dict(acc_df=0.0, acc_dft=0.0, loss_mia_auc=0.5, n_forget=5400.0, n_dft=1000.0)
    unseen = {"mia_dft": 100.0, "mia_dft_entropy": 14.0, "mia_dft_modified_entropy": 40.0}
    fashion = _new(
        **good,
        **unseen,
        mia_efficacy=100.0,
        mia_efficacy_entropy=14.1,
        mia_efficacy_modified_entropy=38.8,
    )
    gate = next(
        g
        for g in evaluate_gates("class", ORIG, fashion, GateSettings()).results
        if g.name == "mia_efficacy"
    )
    assert gate.passed and gate.threshold == 37.0 and "unseen test images" in gate.reference
    # Df still looks like training data where the unseen images do not: fails.
    kept = _new(**good, **dict.fromkeys(unseen, 12.0), mia_efficacy=3.0)
    assert (
        evaluate_gates("class", ORIG, kept, GateSettings())
        .failures[0]
        .startswith("mia_efficacy: 3 not >= ")
    )
    # Where the unseen images are called non-member (CIFAR-10: 100), the absolute floor holds.
    cifar = _new(**good, **dict.fromkeys(unseen, 100.0), mia_efficacy=94.0)
    gate = next(
        g
        for g in evaluate_gates("class", ORIG, cifar, GateSettings()).results
        if g.name == "mia_efficacy"
    )
    assert not gate.passed and gate.threshold == 95.0 and gate.allowance == 0.0
