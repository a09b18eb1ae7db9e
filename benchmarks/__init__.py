"""The benchmark harness: RFA side by side with the baselines on real data (`unlearn bench`).

harness   runs the methods over seeds and writes results.json / results.md
cache     trained base models and Retrain oracles, keyed by data, spec and recipe
report    results.json -> results.md (means, gaps to Retrain, time ratios)
tune      one RFA run with settings overrides, for sizing a setting (not a benchmark)

Configured by a params file's `bench` section (components.settings.BenchSettings) and the
`BenchRun` of the command line; nothing here overrides a setting silently.
"""
