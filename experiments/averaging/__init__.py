"""Iterate averaging and ensembles (SWA, SWAG, FGE, Gadam), MNIST-1D CNN."""
