"""Tests of the gate, the MLflow registry operations and the review report (package: unique module names)."""
