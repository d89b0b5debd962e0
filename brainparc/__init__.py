"""brainparc: unified lifespan brain parcellation (BrainParc) as a BIDS App.

Importing the package is cheap: it never imports torch, ants or nipype.
"""

__version__ = "0.1.0"
