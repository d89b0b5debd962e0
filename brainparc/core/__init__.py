"""Pure preprocessing science for brainparc: functions over nibabel images and numpy arrays.

Nothing in this package reads paths (except :func:`brainparc.core.io.load_t1w`), nor imports nipype or pybids.
"""
