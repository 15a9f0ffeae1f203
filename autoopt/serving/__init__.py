"""Serving under load: priority scheduling, dynamic batching, open-loop load, metrics, capacity."""
