"""Peer models run side by side with brainparc in ``benchmarks/evaluate.py`` (benchmark only, never bundled)."""
