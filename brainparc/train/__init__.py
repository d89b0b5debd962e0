"""Training: label declarations, partial-label losses, SynthSeg-style synthesis, data loading.

Importing this package is cheap (no torch import); import the submodules you need:
``labelsets`` (declarations → group targets), ``losses`` and ``targets`` (pure tensor code), ``synth`` (synthetic
images from label maps), ``data`` (seed layout, patch dataset).
"""
