"""Timing real generation: requests, warm-up, percentiles."""
