"""Training: label declarations, partial-label losses, SynthSeg-style synthesis, data loading, the trainer and its CLI.

Importing this package is cheap (no torch import); import the submodules you need:
``labelsets`` (declarations → group targets), ``losses`` and ``targets`` (pure tensor code), ``synth`` (synthetic
images from label maps), ``data`` (seed layout, patch dataset), ``loop`` (the :class:`~brainparc.train.loop.Trainer`),
``distributed`` (torchrun contract, loaders), ``memory`` (gradient checkpointing), ``validate`` (sliding-window
validation, Dice tables, learning curve), ``config`` + ``run`` (one configured run), ``prepare`` (BIDS + aparc+aseg →
seed layout) and ``cli`` (``brainparc train {parc,strip,prepare}``).
"""
