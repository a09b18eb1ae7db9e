"""Adapters around the pure components: Prefect flows, the MLflow registry, DVC snapshots, the
request store and the `unlearn` CLI. Data flows one way: pipelines -> components."""
