"""The ``kubernetes`` launch backend (in progress)."""
