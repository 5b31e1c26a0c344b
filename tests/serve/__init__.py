"""Tests of the model server and its image (package: unique module names next to tests/conftest.py)."""
