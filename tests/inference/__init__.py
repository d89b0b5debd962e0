"""Tests of brainparc.inference."""
