"""RFA under bf16 autocast on the CPU (native on AMX / AVX512-BF16, emulated elsewhere: the
`bf16_anywhere` fixture): the mixed-precision path CUDA's `auto` policy takes, without a GPU."""

import pytest
import torch

from components.forget import extract_forget_set
from components.models import to_input
from components.settings import LoraSettings, RfaSettings
from components.unlearning.rfa import rfa
from components.unlearning.types import UnlearnTask
from tests.behaviour.test_lora_rfa import _class_task


@pytest.mark.usefixtures("bf16_anywhere")
def test_rfa_under_bf16_and_channels_last_still_forgets(base_model, digits):
    """No GPU here: `precision: bf16` runs CUDA's auto policy (bf16 autocast + channels_last) on
    the CPU, so the mixed-precision code path itself is exercised."""
    from components import runtime

    cuda, bf16 = (runtime.precision_policy(torch.device(d), p) for d, p in
                  (("cuda", "auto"), ("cpu", "bf16")))  # fmt: skip
    assert cuda.autocast_dtype == bf16.autocast_dtype == torch.bfloat16
    assert cuda.memory_format == bf16.memory_format == torch.channels_last
    assert runtime.precision_policy(torch.device("cpu"), "auto").precision == "fp32"
    _, task = _class_task(digits, c=4)
    result = rfa(base_model, task, LoraSettings(), RfaSettings(max_steps=200, precision="bf16"))
    x = to_input(task.forget.x)
    with torch.no_grad():
        out = result.model(x)
    assert torch.isfinite(out).all() and (out.argmax(1).numpy() == task.forget.y).mean() <= 0.05
    assert all(p.is_contiguous() for p in result.model.parameters())  # served in the plain layout


@pytest.mark.usefixtures("bf16_anywhere")
def test_target_passes_run_in_the_runs_precision_and_give_fp32_targets(
    base_model, digits, monkeypatch
):
    """Under bf16 the no-grad passes RFA builds its targets from (the teacher's over Df, Dr and
    heldout; the student's when the sample target is refreshed) run under autocast like its
    steps; they ran in fp32 outside it. What they hand the targets is fp32 all the same."""
    from components.settings import ScenarioSettings
    from components.unlearning import rfa as methods

    passes, views = [], []
    real_pass, real_view = methods.logits_and_taps, methods._teacher_view

    def spy_pass(model, x, taps, policy, device, run=None):
        inner, under = run or model, []

        def forward(xb):  # what each chunk's forward runs under
            under.append(torch.is_autocast_enabled("cpu"))
            return inner(xb)

        out = real_pass(model, x, taps, policy, device, forward)
        passes.append(all(under))
        assert out[0].dtype == torch.float32
        assert all(t.dtype == torch.float32 for t in out[1].values())
        return out

    monkeypatch.setattr(methods, "logits_and_taps", spy_pass)
    monkeypatch.setattr(
        methods, "_teacher_view", lambda *a: views.append(real_view(*a)) or views[-1]
    )
    fs = extract_forget_set(digits.train, set(digits.train.ids[:40].tolist()))
    task = UnlearnTask("sample", fs.forget, fs.retain, digits.heldout)
    sc = ScenarioSettings(target="margin_quantile", target_refresh=5, forget_batch=16)
    cfg = RfaSettings(min_steps=10, max_steps=10, precision="bf16", sample_unlearning=sc)
    rfa(base_model, task, LoraSettings(), cfg)
    # Df and Dr (the teacher's), heldout, and one refresh at step 5 (none at the last step).
    assert passes == [True] * 4, passes
    assert views[0].heldout_logits.dtype == torch.float32 and len(views[0].heldout_logits)
