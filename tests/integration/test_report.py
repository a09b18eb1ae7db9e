"""The batch report where reviewers look: on the MLflow run (HTML, markdown, plots through
log_figure, the loss curve as step metrics), as the version's description, as Prefect artifacts,
and rendered by a real browser (headless Chromium) with every plot loaded."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

from components.report_figures import FIGURES
from pipelines.flow import deletion_batch
from pipelines.intake import submit
from tests.conftest import make_workspace

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def batch(tmp_path_factory, prefect_server):
    ws = make_workspace(tmp_path_factory.mktemp("report"))
    submit(ws, {"kind": "class", "class_label": 3})
    outcome = deletion_batch(str(ws.root))
    assert outcome.status == "awaiting_approval", outcome.reason
    reg = ws.registry()
    mv = reg.resolve(ws.settings.registry.model_name, outcome.model_version)
    run_dir = Path(urlparse(reg.client.get_run(mv.run_id).info.artifact_uri).path)
    return ws, reg, mv, outcome, run_dir / "report"


def test_every_batch_report_is_on_its_run_and_its_version(batch):
    ws, reg, mv, outcome, report = batch
    pngs = sorted(p.stem for p in (report / "figures").glob("*.png"))
    assert pngs == sorted(FIGURES)  # every plot, images included: digits are images
    assert all((report / "figures" / f"{n}.png").read_bytes()[:4] == b"\x89PNG" for n in pngs)
    md = (report / "report.md").read_text()
    html = (report / "report.html").read_text()
    for text in (md, html, mv.description):
        assert outcome.certificate_sha256 in text and outcome.batch_id in text
        assert "mia_efficacy" in text and "Acc(Dft) %" in text and "Requests: 1 (1 class)" in text
    assert "Gates: all passed" in mv.description and "report/report.html" in mv.description
    assert html.count("<img ") == len(FIGURES) and "http://" not in html and "<script" not in html
    # The loss curve is also MLflow step metrics, one point per logged step.
    hist = reg.client.get_metric_history(mv.run_id, "unlearn.loss_forget")
    assert len(hist) > 3 and len({m.step for m in hist}) == len(hist)


def test_the_report_is_a_prefect_artifact_of_the_flow_run(batch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    _, _, _, outcome, _ = batch

    async def latest(key: str):
        async with get_client() as client:
            flt = ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
            return await client.read_latest_artifacts(artifact_filter=flt)

    md = asyncio.run(latest("batch-report"))
    gates = asyncio.run(latest("batch-gates"))
    assert md and outcome.certificate_sha256 in md[0].data and md[0].flow_run_id is not None
    assert gates and gates[0].type == "table" and "retained_utility" in str(gates[0].data)


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_the_html_report_renders_in_headless_chromium_with_every_plot(batch):
    from playwright.sync_api import sync_playwright

    report = batch[-1] / "report.html"
    errors: list[str] = []
    flags = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=flags)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("requestfailed", lambda r: errors.append(f"failed: {r.url[:60]}"))
        page.goto(report.as_uri())
        images = page.evaluate(
            "[...document.images].map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight])"
        )
        ids = page.evaluate("[...document.querySelectorAll('figure')].map(f => f.id)")
        if shot := os.environ.get("UNLEARN_REPORT_SCREENSHOT"):
            page.screenshot(path=shot, full_page=True)
        browser.close()
    assert sorted(ids) == sorted(FIGURES)
    assert all(ok and w > 100 and h > 100 for _, ok, w, h in images), images
    assert errors == []


def test_a_broken_plot_is_what_the_browser_check_catches(batch, tmp_path):
    """The check above can fail: the same page with one image's data cut short is caught."""
    if CHROMIUM is None:
        pytest.skip("needs Debian's chromium (.ci/run installs it)")
    from playwright.sync_api import sync_playwright

    html = (batch[-1] / "report.html").read_text()
    i = html.index("base64,") + len("base64,")
    broken = tmp_path / "broken.html"
    broken.write_text(html[:i] + "AAAA" + html[i + 4000 :])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(broken.as_uri())
        widths = page.evaluate("[...document.images].map(i => i.naturalWidth)")
        browser.close()
    assert 0 in widths
