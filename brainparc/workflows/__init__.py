"""nipype workflows of the BIDS App: wiring only (the numerics live in :mod:`brainparc.core` / the pipeline)."""
