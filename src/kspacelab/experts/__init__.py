"""Mixtures of experts: bundle manifests, training a bundle, routing volumes, reconstructing with a bundle.

* :mod:`~kspacelab.experts.manifest`: the manifest (which checkpoint serves which route); no torch import;
* :mod:`~kspacelab.experts.training`: ``kspacelab train --bundle`` (every member one training run);
* :mod:`~kspacelab.experts.routing`: loading a bundle, routing volumes (anatomy classifier, mask);
* :mod:`~kspacelab.experts.reconstruct`: ``kspacelab reconstruct --bundle`` with a time budget.

Import the submodules directly; this package imports nothing, so reading a manifest does not import torch.
"""
