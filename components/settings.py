"""Typed settings: `params.yaml` parsed once into a frozen pydantic tree.

Functions take the sub-model they need (e.g. `LoraSettings`), never the whole tree. An invalid
file fails with `SettingsError`, whose message names every bad key by its dotted path.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from components.grids import grid_problem


class SettingsError(ValueError):
    """params.yaml is missing, unreadable or invalid; the message names the dotted key path."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataSettings(_Frozen):
    source: Literal["digits", "npz", "imagefolder", "fashion_mnist", "cifar10"] = "digits"
    root: str | None = None
    download: bool = False
    # npz only: the array holding each sample's own id (e.g. `names` in ../shared/datasets/cifar10);
    # null = ids made from the row number (`train-00012`).
    id_key: str | None = None
    test_fraction: float = Field(0.25, gt=0, lt=1)  # only where the source has no test split
    heldout_fraction: float = Field(0.2, ge=0, lt=1)
    # Where the non-member reference is carved from. `train`: heldout_fraction of the training files
    # (a model trained here never sees them). `test`: heldout_fraction of the test split, divided
    # once; the only honest choice for a pre-trained model that saw every training file.
    heldout_from: Literal["train", "test"] = "train"
    seed: int = 0

    @model_validator(mode="after")
    def _fractions_leave_training_data(self) -> DataSettings:
        if self.heldout_from == "train" and self.test_fraction + self.heldout_fraction >= 0.9:
            raise ValueError(
                "test_fraction + heldout_fraction must leave at least 10% for training"
            )
        return self


class ModelSettings(_Frozen):
    arch: str = "small_cnn"
    width: int = Field(32, ge=4, le=512)
    # Input normalisation built into the model; null = per-channel statistics of the training
    # images. A pre-trained checkpoint needs the constants it was trained with (the CIFAR ResNets:
    # ImageNet's), which no data statistic recovers.
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    # A user's own architecture: `package.module:builder`, called with `builder_kwargs`, returning
    # an nn.Module that takes float NCHW images in [0, 1]. Used when `arch` is `builder`.
    builder: str | None = Field(None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
    builder_kwargs: dict[str, int | float | str | bool] = {}

    @model_validator(mode="after")
    def _builder_named(self) -> ModelSettings:
        if (self.arch == "builder") != (self.builder is not None):
            raise ValueError(
                "set model.builder (package.module:function) exactly when model.arch is builder"
            )
        if (self.mean is None) != (self.std is None) or (
            self.std is not None and min(self.std) <= 0
        ):
            raise ValueError("model.mean and model.std go together, and every std must be positive")
        return self


class TrainSettings(_Frozen):
    epochs: int = Field(30, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    # adam | sgd (Nesterov momentum 0.9, the CIFAR ResNets' recipe); registry in training.py.
    optimizer: Literal["adam", "sgd"] = "adam"
    # Random 4-pixel-shift crop + horizontal flip: the recipe of the pre-trained CIFAR ResNets,
    # so a Retrain oracle trained here is comparable to the original. Off for digits (a flip
    # changes a digit).
    augment: bool = False
    # fp32 | bf16 (runtime.TRAIN_PRECISIONS): bf16 trains long oracles faster on AMX/AVX512-BF16
    precision: Literal["fp32", "bf16"] = "fp32"
    seed: int = 0


class LoraSettings(_Frozen):
    rank: int = Field(4, ge=1, le=256)
    alpha: float = Field(8, gt=0)
    target_modules: str = r"block2\.conv|block3\.conv|head"


class ScenarioSettings(_Frozen):
    """How hard RFA pushes on Df in one scenario (steps scale with |Df|, not |D|)."""

    target: str
    lr: float = Field(3e-3, gt=0)
    forget_weight: float = Field(1.0, ge=0)  # lambda in L = L_r + lambda * L_f
    feature_weight: float = Field(1.0, ge=0)  # weight of the intermediate-tap part of L_f
    forget_batch: int = Field(32, ge=1)
    forget_epochs: int = Field(15, ge=1)  # passes over Df
    # Class unlearning only: weight of the in-loop adversarial probe
    # (components/unlearning/adversary.py) that penalises Df features a linear probe still
    # recognises as their class. 0 = off.
    probe_weight: float = Field(0.0, ge=0)
    probe_lr: float = Field(1e-2, gt=0)
    probe_steps: int = Field(5, ge=1)  # probe updates per RFA step, on the feature bank
    probe_bank: int = Field(4096, ge=64)  # recent (feature, label) pairs the probe is fitted on
    # Optional cross-entropy on the retain batch (method.md 1.2): with the adversarial probe on, it
    # lets the head re-fit the retained classes that the feature edit disturbed.
    retain_ce_weight: float = Field(0.0, ge=0)
    # How the student's Df logits are pulled to the target's (rfa_loss.FORGET_LOSSES):
    # `logit_mse` (squared logit error) or `kl` (KL from the target's softmax, which only weighs
    # where the output probabilities differ: accuracy and every attack read probabilities).
    forget_loss: str = "logit_mse"
    # Share of each forget batch drawn in proportion to KL(target || teacher) per sample; the rest
    # are plain passes over Df. Why: a sample target moves few of Df, and a uniform batch holds one
    # or two of them, so Adam follows the rest's noise (notes/fashion_mnist-sample10.md). 0 = off.
    forget_focus: float = Field(0.0, ge=0, le=1)
    # Rebuild a heldout-based target (margin_quantile) every this many steps from the *student's*
    # heldout outputs (0 = once, from the teacher's): "Df looks like non-members" must hold for the
    # served model, whose non-members move too (notes/cifar10-resnet20-sample10.md).
    target_refresh: int = Field(0, ge=0)


class RfaSettings(_Frozen):
    taps: tuple[str, ...] = ("block1", "block2", "block3")
    class_unlearning: ScenarioSettings = ScenarioSettings(
        target="masked_nearest_class", forget_epochs=40
    )
    sample_unlearning: ScenarioSettings = ScenarioSettings(
        target="margin_quantile",
        lr=1e-2,
        forget_weight=10.0,
        feature_weight=0.0,
        forget_batch=16,
        forget_epochs=100,
    )
    retain_batch: int = Field(128, ge=1)
    # Models whose first stages carry no adapter (ResNetCifar: LoRA in layer3 + head) have those
    # stages' output cached once for Df and for this many retain samples, which the retain batches
    # are then drawn from. 0 = off: every step runs the whole network on fresh draws from Dr.
    retain_pool: int = Field(8192, ge=0)
    min_steps: int = Field(60, ge=1)
    max_steps: int = Field(600, ge=1)
    # Early stop (method.md 6): every N steps past min_steps, score a fixed forget subset; stop once
    # its accuracy is within `stop_tolerance_pt` of what the target itself scores there. 0 = off.
    stop_check_every: int = Field(0, ge=0)
    stop_tolerance_pt: float = Field(1.0, ge=0)
    # Stall stop: after this many checks in a row without the check accuracy falling more than
    # `stop_tolerance_pt` below its best so far, stop too: the adapter has stopped moving Df and
    # more steps only cost time; the gates judge what it reached. 0 = off (run to max_steps).
    stop_patience: int = Field(0, ge=0)
    # Retain guard (unlearning/guard.py): a run that ends more than this below the teacher on a
    # fixed Dr subset gets back the adapter of its latest check within it. None = off.
    retain_guard_pt: float | None = Field(1.0, gt=0)
    retain_guard_every: int = Field(10, ge=1)
    retain_guard_size: int = Field(512, ge=1)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # auto (CUDA: bf16 autocast, CPU: fp32) | fp32 | bf16 (runtime.PRECISIONS); bench: all methods
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    # Data-parallel processes (torchrun: gloo on CPU, NCCL with one GPU each); the batches must
    # divide among them. 1 runs in the batch's own process.
    processes: int = Field(1, ge=1)

    @model_validator(mode="after")
    def _probe_is_for_classes(self) -> RfaSettings:
        if self.sample_unlearning.probe_weight > 0:
            raise ValueError(
                "sample_unlearning.probe_weight must be 0: the adversarial probe recognises a "
                "forgotten class, and sample unlearning forgets no class"
            )
        return self

    def scenario(self, name: str) -> ScenarioSettings:
        return {"class": self.class_unlearning, "sample": self.sample_unlearning}[name]


class BaselineSettings(_Frozen):
    """The baselines' knobs at their references' values (components/unlearning/baselines.py)."""

    lr: float = Field(0.01, gt=0)
    epochs: int = Field(1, ge=1)  # passes over Dr (with Df's pass first for rl / salun / scrub)
    batch_size: int = Field(128, ge=1)
    forget_batch: int | None = Field(None, ge=1)  # Df's batch where it differs (SCRUB: 32)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)
    alpha: float = Field(0.9, ge=0, le=1)  # NegGrad+: weight of the retain loss
    forget_cap: float | None = Field(None, gt=0)  # NegGrad+: clamp the ascent term (None: off)
    saliency_fraction: float = Field(0.5, gt=0, le=1)  # SalUn: share of weights updated
    scrub_max_steps: int = Field(2, ge=0)  # SCRUB: epochs that begin with a max pass
    scrub_ce: float = Field(0.99, ge=0)  # SCRUB: weight of CE on Dr (the reference's gamma)
    scrub_kl: float = Field(0.001, ge=0)  # SCRUB: weight of KL on Dr (the reference's alpha)
    lr_decay_epochs: tuple[int, ...] = (3, 5, 9)  # SCRUB: lr x0.1 after these epochs
    temperature: float = Field(4.0, gt=0)  # SCRUB: KL temperature
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # as rfa.precision
    seed: int = 0


class EvaluationSettings(_Frozen):
    retain_eval_max: int = Field(2000, ge=10)
    loss_mia_folds: int = Field(10, ge=2)
    seed: int = 0


class BenchSettings(_Frozen):
    """The benchmark harness (`unlearn bench`, benchmarks/): what it sweeps and how it scores.

    RFA runs with the file's own `lora` and `rfa` sections (layer names checked, never replaced).
    """

    # Learning-rate grid per baseline: log-spaced, at least five points, around the reference
    # recipe's lr; each baseline keeps the point closest to Retrain, and a choice at either end
    # of its grid is flagged in the report (the grid did not bracket it).
    grids: dict[str, tuple[float, ...]] = {
        "ft": (0.0025, 0.005, 0.01, 0.02, 0.04),
        "neggrad": (0.0025, 0.005, 0.01, 0.02, 0.04),
        "rl": (0.00325, 0.0065, 0.013, 0.026, 0.052),
        "salun": (0.00325, 0.0065, 0.013, 0.026, 0.052),
        "scrub": (0.000125, 0.00025, 0.0005, 0.001, 0.002),
        "rfa": (0.00125, 0.0025, 0.005, 0.01, 0.02),  # the scenario's rfa lr, same budget
    }
    # Each baseline's recipe: the `baseline` fields its reference sets (epochs, batch sizes),
    # applied before the grid's lr. components/unlearning/baselines.py names the references.
    recipes: dict[str, dict[str, int | float | None]] = {
        "ft": {"epochs": 10, "batch_size": 256},
        "neggrad": {"epochs": 5, "batch_size": 128},
        "rl": {"epochs": 10, "batch_size": 256},
        "salun": {"epochs": 10, "batch_size": 256},
        "scrub": {"epochs": 3, "batch_size": 128, "forget_batch": 32},
    }
    baseline: BaselineSettings = BaselineSettings()  # recipes and grid points are set over it
    # The bench scores every method on up to 5,000 retained images (the gates read fewer).
    evaluation: EvaluationSettings = EvaluationSettings(retain_eval_max=5000)
    probe_layer: str = "pool"  # pooled output read by the probes (the penultimate features)
    early_probe_layer: str | None = "block2"  # a linear probe one stage earlier (None: off)
    # Divides the test split once, stratified: reference / validation / report (benchmarks/cache).
    heldout_seed: int = 12345

    @model_validator(mode="after")
    def _recipe_and_log_grid_for_every_baseline(self) -> BenchSettings:
        base = self.baseline.model_dump()
        problem = grid_problem(
            self.grids, self.recipes, lambda r: BaselineSettings.model_validate({**base, **r})
        )
        if problem:
            raise ValueError(problem)
        return self


class ReportSettings(_Frozen):
    """The batch report reviewers decide from (components/report_page.py)."""

    # Thumbnails of Df and of Dr in the report's sample grid. The report stays with the model
    # version, so Df's images outlive the erasure there: 0 where the inputs are personal data.
    sample_images: int = Field(8, ge=0, le=32)


class ReviewSettings(_Frozen):
    # Who may approve or reject (empty: anyone named, the separation of duties still holds).
    approvers: tuple[str, ...] = ()


class GateSettings(_Frozen):
    retained_utility_drop_pt: float = Field(1.0, ge=0)
    retain_fit_drop_pt: float = Field(1.0, ge=0)
    class_forget_max_pct: float = Field(1.0, ge=0, le=100)
    sample_forget_gap_pt: float = Field(2.5, ge=0)
    class_mia_min: float = Field(95.0, ge=0, le=100)
    # ...or Df called non-member as often as the forgotten class's own unseen test images (Dft),
    # less this many points: what Retrain, which never saw the class, would score (gates.py).
    class_mia_tolerance_pt: float = Field(3.0, ge=0)
    sample_mia_tolerance_pt: float = Field(3.0, ge=0)
    class_loss_mia_auc_max: float = Field(0.55, ge=0.5, le=1)
    sample_loss_mia_auc_tolerance: float = Field(0.03, ge=0, le=0.5)
    retain_leakage_rise_pt: float = Field(1.0, ge=0)
    noise_z: float = Field(2.0, ge=0)


class RequestSettings(_Frozen):
    deadline_days: int = Field(30, ge=1, le=90)
    max_forget_fraction: float = Field(0.5, gt=0, lt=1)
    # A batch's lease, renewed every quarter of it while its process lives; a batch whose process
    # is gone (same host) or whose lease ran out is recovered by the next run.
    batch_lease_minutes: int = Field(120, ge=1)
    # A request whose batch failed its gates waits this long before a batch takes it again,
    # doubling with each failure, so it cannot block the requests behind it.
    retry_backoff_minutes: float = Field(60.0, ge=0)
    # ...and after this many failed batches it is set aside for a person to decide (retry with
    # other params, extend its deadline or cancel it): 0 = retry forever.
    escalate_after_failures: int = Field(3, ge=0)
    # GDPR Art. 12(3): a deadline may be extended by at most two further months, with a reason.
    max_extension_days: int = Field(60, ge=0, le=60)
    # On approval, the erased samples' objects leave the DVC cache and remote (pipelines/purge.py);
    # a legal hold keeps them and records the exception.
    purge_on_approval: bool = True
    legal_hold: bool = False
    # Earlier model versions still carry what an approved batch erased (in their weights): keep
    # them, archive them (tagged retired, never served again) or delete their weights and
    # registry entries. Recorded in the same purge record; a legal hold keeps them too.
    earlier_versions: Literal["keep", "archive", "delete"] = "archive"


class ScheduleSettings(_Frozen):
    """When `unlearn serve` runs a deletion batch (a Prefect deployment schedule)."""

    every_minutes: float = Field(60.0, gt=0)  # an interval schedule...
    cron: str | None = None  # ...or a cron expression, which replaces it (e.g. "0 2 * * *")
    # A scheduled run waits until this many requests are ready (a batch costs about the same for
    # one request as for fifty)...
    min_requests: int = Field(1, ge=1)
    # ...unless the earliest deadline is this close: then it runs with what is there.
    deadline_margin_days: float = Field(3.0, ge=0)


class RegistrySettings(_Frozen):
    model_name: str = Field("digits-cnn", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
    experiment: str = "unlearning"


class CertificateSettings(_Frozen):
    # ed25519: per-duty key pairs (pipelines/keys.py), verifiable with the public key alone;
    # hmac: one shared secret in the environment variable key_env (whoever verifies can forge).
    scheme: Literal["ed25519", "hmac"] = "ed25519"
    key_env: str = Field("UNLEARN_CERT_KEY", pattern=r"^[A-Z_][A-Z0-9_]*$")


class Settings(_Frozen):
    data: DataSettings = DataSettings()
    model: ModelSettings = ModelSettings()
    train: TrainSettings = TrainSettings()
    lora: LoraSettings = LoraSettings()
    rfa: RfaSettings = RfaSettings()
    evaluation: EvaluationSettings = EvaluationSettings()
    gates: GateSettings = GateSettings()
    report: ReportSettings = ReportSettings()
    review: ReviewSettings = ReviewSettings()
    requests: RequestSettings = RequestSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    registry: RegistrySettings = RegistrySettings()
    certificate: CertificateSettings = CertificateSettings()
    bench: BenchSettings = BenchSettings()


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "<root>"
        parts.append(f"{path}: {e['msg']}")
    return "; ".join(parts)


# Keys that moved: an older params file gets told where its setting lives now, not only that
# the key is unknown.
MOVED_KEYS: dict[tuple[str, str], str] = {
    (
        "rfa",
        "retain_ce_weight",
    ): "rfa.class_unlearning.retain_ce_weight and rfa.sample_unlearning.retain_ce_weight",
}


def parse_settings(raw: object, source: str = "params.yaml") -> Settings:
    """Validate an already-parsed mapping. Raises SettingsError naming each bad dotted key."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SettingsError(f"{source}: the top level must be a mapping of sections")
    for (section, key), now in MOVED_KEYS.items():
        if isinstance(raw.get(section), dict) and key in raw[section]:
            raise SettingsError(
                f"invalid {source}: {section}.{key} has moved; set {now} (one per scenario)"
            )
    try:
        return Settings.model_validate(raw)
    except ValidationError as err:
        raise SettingsError(f"invalid {source}: {_describe(err)}") from None


def load_settings(path: str | Path) -> Settings:
    """Read and validate a params.yaml file."""
    p = Path(path)
    if not p.is_file():
        raise SettingsError(f"{p}: no such params file")
    try:
        raw = yaml.safe_load(p.read_text())
    except UnicodeDecodeError:
        raise SettingsError(f"{p}: not a text file (not UTF-8); restore the params file") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise SettingsError(f"{p}: not valid YAML{where}") from None
    return parse_settings(raw, source=str(p))
