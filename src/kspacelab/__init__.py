"""kspacelab: deep-learning reconstruction of accelerated multi-coil MRI (SNU FastMRI Challenge systems)."""

__version__ = "0.1.0"
