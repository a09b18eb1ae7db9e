"""The pure library: unlearning math, metrics, gates, certificates.

Imports torch / peft / numpy / pydantic / scikit-learn only; never prefect, mlflow or dvc
(tests/unit/test_purity.py walks the AST to keep it so).
"""
