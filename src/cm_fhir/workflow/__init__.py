"""Discharge-planning workflow rules (pure). Filled in by the workflow issue."""
