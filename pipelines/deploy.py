"""The deletion-batch flow as a deployment on a Prefect work pool: workers started anywhere run
the batches, one model per deployment, one run of it at a time.

The flow's parameters are plain values (the workspace's path on the worker, the model's name,
whether it is a scheduled run); each of its tasks re-opens the workspace, its stores and its
models (pipelines/batch_tasks.py), so a worker needs only the workspace (a shared volume or a
clone with the same stores) and this package. A process pool runs the flow by module path in the
worker's own environment; Docker and Kubernetes pools run it in an image built from this
project's Dockerfile (`image`), with the workspace mounted there.
"""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from pipelines.workspace import Workspace


def create_pool(name: str, kind: str = "process") -> None:
    """As `prefect work-pool create NAME --type KIND` does: with the type's default job template
    (Prefect ships the process, Docker and Kubernetes ones; no worker package is needed)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.utilities.asyncutils import run_coro_as_sync
    from prefect.workers.utilities import get_default_base_job_template_for_infrastructure_type

    async def create() -> None:
        template = await get_default_base_job_template_for_infrastructure_type(kind)
        if not template:
            raise ValueError(f"no default job template for {kind!r} work pools")
        async with get_client() as client:
            await client.create_work_pool(
                WorkPoolCreate(name=name, type=kind, base_job_template=template)
            )

    run_coro_as_sync(create())


def deployment_name(ws: Workspace) -> str:
    return f"deletion-batch-{ws.settings.registry.model_name}"


def deploy_batches(
    ws: Workspace,
    pool: str,
    every: timedelta | None = None,
    image: str | None = None,
    workspace_path: str | None = None,
) -> UUID:
    """Create (or update) the model's deployment on `pool`; returns its id. `every`: run on that
    interval (scheduled runs wait for `schedule.min_requests`); None: on demand only.
    `workspace_path`: where the workspace is on the workers (default: its path here)."""
    from prefect.deployments.runner import EntrypointType

    from pipelines.flow import deletion_batch

    return deletion_batch.deploy(
        name=deployment_name(ws),
        work_pool_name=pool,
        parameters={
            "workspace": workspace_path or str(ws.root),
            "model": ws.settings.registry.model_name,  # the run refuses a workspace serving another
            "scheduled": every is not None,
        },
        concurrency_limit=1,  # one batch of a model at a time; the batch lease holds it too
        entrypoint_type=EntrypointType.MODULE_PATH,
        image=image,
        build=False,  # the image is built from the Dockerfile by its owner, not here
        push=False,
        interval=every,
        print_next_steps=False,
        ignore_warnings=True,
    )
