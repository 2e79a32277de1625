"""Analysis tools (Hessian spectra, landscapes, noise scale) on trained nets."""
