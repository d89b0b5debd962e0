"""Thin nipype interfaces over :mod:`brainparc.pipeline`, :mod:`brainparc.core` and the output writers."""
