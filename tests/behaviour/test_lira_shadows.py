"""LiRA with real shadow models on digits: it finds Df in the model that trained on it and not in
the one retrained without it (benchmarks/shadows.py, components/lira.py)."""

import numpy as np
import torch

from benchmarks.cache import forget_ids, load_bench_data
from benchmarks.shadows import concat, train_shadows
from components.forget import extract_forget_set
from components.models import build_model, make_spec
from components.runtime import set_seed
from components.settings import TrainSettings
from components.training import train_classifier

CPU = torch.device("cpu")


def _trained(spec, split, train):
    set_seed(train.seed)
    model = build_model(spec)
    train_classifier(model, split, train, CPU)
    return model.eval()


def test_lira_tells_the_model_that_trained_on_df_from_retrain(tmp_path):
    data = load_bench_data("digits", None, 12345)
    ds, validation = data.ds, data.validation
    spec = make_spec("small_cnn", ds.train.x, ds.num_classes, 32)
    train = TrainSettings(epochs=30)
    pool = concat(ds.train, validation)
    shadows = train_shadows(pool, spec, train, 4, tmp_path, CPU)
    fs = extract_forget_set(ds.train, forget_ids(ds, "sample", None, 0.1, 1))
    original = shadows.attack(_trained(spec, ds.train, train), fs.forget, validation, CPU)
    retrain = shadows.attack(_trained(spec, fs.retain, train), fs.forget, validation, CPU)
    assert original["auc"] > retrain["auc"] + 0.1, (original, retrain)
    assert abs(retrain["auc"] - 0.5) < 0.1, retrain
    # Cached: the same statistics come back without training again.
    files = sorted((tmp_path / "shadows").glob("*.npy"))  # beside their locks
    assert len(files) == 4
    again = train_shadows(pool, spec, train.model_copy(update={"epochs": 1}), 4, tmp_path, CPU)
    assert len(list((tmp_path / "shadows").glob("*.npy"))) == 8  # another recipe, other shadows
    same = train_shadows(pool, spec, train, 4, tmp_path, CPU)
    assert np.array_equal(same.phi, shadows.phi) and not np.array_equal(again.phi, shadows.phi)


def test_a_shadow_another_process_is_training_is_waited_for_not_trained_again(tmp_path):
    """Two bench processes over one table (`JOBS=2`) reach the shadows together: one trains the
    shadows the other does not hold, then loads the other's instead of training it twice."""
    import threading
    import time

    from benchmarks.cache import only_one_trainer
    from benchmarks.shadows import shadow_plan

    data = load_bench_data("digits", None, 12345)
    pool = concat(data.ds.train, data.validation)
    spec = make_spec("small_cnn", pool.x, data.ds.num_classes, 32)
    train = TrainSettings(epochs=1)
    _, paths = shadow_plan(pool, spec, train, 2, tmp_path, 0)
    theirs = np.full(len(pool), 7.0, dtype=np.float32)  # what the other process will write
    got: dict = {}
    with only_one_trainer(paths[0]):  # the other process, mid-training shadow 0
        worker = threading.Thread(
            target=lambda: got.update(s=train_shadows(pool, spec, train, 2, tmp_path, CPU))
        )
        worker.start()
        deadline = time.monotonic() + 600
        while worker.is_alive() and not paths[1].exists() and time.monotonic() < deadline:
            time.sleep(0.1)  # shadow 1 is trained meanwhile; then it waits for shadow 0
        worker.join(timeout=1.0)
        assert worker.is_alive() and paths[1].exists() and not paths[0].exists()
        np.save(paths[0], theirs)  # the other process finishes shadow 0
    worker.join()
    assert np.array_equal(got["s"].phi[0], theirs)  # loaded, not trained again
    assert not np.array_equal(got["s"].phi[1], theirs)


def test_bench_reports_lira_for_every_method_of_a_sample_run(tmp_path, monkeypatch):
    from rich.console import Console

    from benchmarks.harness import BenchRun, run_bench
    from components.settings import Settings

    monkeypatch.chdir(tmp_path)
    run = BenchRun(
        dataset="digits", scenario="sample", fraction=0.1, seeds=[1], methods=["retrain", "ft"],
        out=tmp_path / "out", oracle_epochs=3, lira_shadows=2,
    )  # fmt: skip
    settings = Settings.model_validate({"train": {"epochs": 3}})
    result = run_bench(run, settings, tmp_path / "cache", Console(quiet=True))
    assert result["config"]["lira_shadows"] == 2
    assert len(list((tmp_path / "cache" / "shadows").glob("*of2.npy"))) == 2
    for r in result["records"]:
        assert 0 <= r["lira_auc"] <= 1 and 0 <= r["lira_tpr"] <= 1, r["method"]
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| loss-MIA AUC | LiRA AUC | LiRA TPR@1%FPR |" in md
