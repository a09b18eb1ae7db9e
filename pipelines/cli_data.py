"""`unlearn model import` and `unlearn data ids`: bring a model in, look at the snapshot."""

from __future__ import annotations

from pathlib import Path

import typer

from pipelines.cli_common import CliError, current_workspace, out

model_app = typer.Typer(no_args_is_help=True, help="Bring an existing model into the workspace.")
data_app = typer.Typer(
    no_args_is_help=True, help="Look at the training snapshot the champion stands on."
)


@model_app.command("import")
def model_import(
    checkpoint: Path | None = typer.Option(
        None, help="State dict (.pt/.pth/.th, read weights-only) or .safetensors file."
    ),
    uri: str | None = typer.Option(
        None, help="MLflow model URI: models:/NAME@ALIAS, models:/NAME/VERSION or runs:/ID/PATH."
    ),
    tracking_uri: str | None = typer.Option(
        None, help="Tracking server holding --uri (default: the workspace's)."
    ),
    trained_on: str = typer.Option(
        "train-files",
        help="What the model was trained on: train-files (every training "
        "file of the data source) or train-split (only this workspace's train split).",
    ),
    replace_champion: bool = typer.Option(False, help="Register it even if a champion exists."),
) -> None:
    """Register a pre-trained model as champion (architecture: params.yaml's model section)."""
    from pipelines.importer import import_model

    ref, facts = import_model(
        current_workspace(), checkpoint, uri, tracking_uri, trained_on, replace_champion
    )
    out.print(
        f"imported {facts.get('source.uri') or facts.get('source.file')} as {ref} (champion): "
        f"test {facts['acc_test']:.2f}%  heldout {facts['acc_heldout']:.2f}%  train sample "
        f"{facts['acc_train_sample']:.2f}%"
    )


@data_app.command("ids")
def data_ids(
    class_label: int | None = typer.Option(None, "--class", help="Only this class."),
    random: int | None = typer.Option(None, help="A seeded random draw of this many ids."),
    seed: int = typer.Option(0, help="Seed of the --random draw."),
) -> None:
    """Print the snapshot's training sample ids, comma-separated (`request submit --samples`)."""
    import numpy as np

    from pipelines.intake import current_state

    train = current_state(current_workspace(read_only=True)).train
    ids = train.ids if class_label is None else train.ids[train.y == class_label]
    if random is not None:
        if not 0 < random <= len(ids):
            raise CliError(f"--random must be between 1 and {len(ids)}")
        ids = np.sort(np.random.default_rng(seed).choice(ids, size=random, replace=False))
    typer.echo(",".join(ids.tolist()))


@data_app.command("purge")
def data_purge(
    model: str,
    version: str,
    actor: str = typer.Option(..., help="Who purges (recorded)."),
) -> None:
    """Remove the objects of the samples an approved version erased from the DVC cache and
    remote, and record it (approval does it by itself unless requests.purge_on_approval is off)."""
    from pipelines.purge import purge

    ws = current_workspace()
    reg = ws.registry()
    if reg.resolve(model, version).tags.get("status") != "approved":
        raise CliError(f"{model}/{version} is not approved; only an approved erasure is purged")
    r = purge(ws, reg, model, version, actor)
    kept = " (kept under legal hold)" if r["legal_hold"] else ""
    out.print(
        f"{model}/{version}: {len(r['objects'])} erased objects, {r['files_removed']} files "
        f"removed{kept}; {len(r['kept_shared'])} shared with retained samples kept"
    )
