"""Third-party OIP clients used by the serving tests (the KServe SDK lives in its own virtualenv)."""
