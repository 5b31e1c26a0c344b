"""mlops: a GitOps CI/CD template for machine learning (pipeline stages, gate, registry, serving)."""

__version__ = "0.1.0"
