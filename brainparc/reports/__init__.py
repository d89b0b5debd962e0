"""Participant and group reports: pure figure/QC functions and the HTML assembly (reads OUTPUT_DIR only)."""
