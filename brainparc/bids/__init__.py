"""BIDS input selection (pybids) and the BIDS-derivatives output contract of the BIDS App."""
