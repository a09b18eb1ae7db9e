"""The unlearning methods' shared vocabulary (more of components/methods.py moves here)."""
