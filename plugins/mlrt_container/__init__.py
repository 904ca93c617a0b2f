"""The ``container`` launch backend (in progress)."""
