"""Experiment tracking of a study. Importing this package does not import MLflow."""

from __future__ import annotations

from autoopt.tracking.mlflow_tracker import STATES, Tracker, numeric_metrics

__all__ = ["STATES", "Tracker", "numeric_metrics"]
