"""Curvature and loss-landscape analysis in pure JAX.

Every tool takes ``fun(params) -> scalar`` (or ``fun(params, batch)`` with
``batches=`` for data-set averages) and any parameter pytree, including the
``nnx.Param`` state of a Flax NNX model, works on the flattened vector inside
jitted loops and hands pytrees back. Plots live in
``optax_zoo.analysis.plotting``, which imports matplotlib only when called.
"""

from optax_zoo.analysis._calibration import (
  ReliabilityData,
  expected_calibration_error,
  negative_log_likelihood,
)
from optax_zoo.analysis._flatness import (
  Flatness,
  average_sharpness,
  local_energy,
  sam_sharpness,
)
from optax_zoo.analysis._hessian import (
  Eigenpairs,
  SpectralDensity,
  TraceEstimate,
  hessian_trace,
  spectral_density,
  top_hessian_eigenvalues,
)
from optax_zoo.analysis._landscape import (
  Interpolation,
  Plane,
  cka,
  interpolate,
  loss_surface,
  plane,
  random_direction,
)
from optax_zoo.analysis._noise_scale import (
  NoiseScale,
  NoiseScaleState,
  gradient_noise_scale,
  noise_scale_from_norms,
  noise_scale_init,
  noise_scale_update,
)
from optax_zoo.analysis._operators import ggn_vp, hvp
from optax_zoo.analysis._trajectory import (
  hessian_diagonal,
  r_med,
  weight_distance,
)
from optax_zoo.analysis.plotting import reliability_plot

__all__ = [
  'Eigenpairs',
  'Flatness',
  'Interpolation',
  'NoiseScale',
  'NoiseScaleState',
  'Plane',
  'ReliabilityData',
  'SpectralDensity',
  'TraceEstimate',
  'average_sharpness',
  'cka',
  'expected_calibration_error',
  'ggn_vp',
  'gradient_noise_scale',
  'hessian_diagonal',
  'hessian_trace',
  'hvp',
  'interpolate',
  'local_energy',
  'loss_surface',
  'negative_log_likelihood',
  'noise_scale_from_norms',
  'noise_scale_init',
  'noise_scale_update',
  'plane',
  'r_med',
  'random_direction',
  'reliability_plot',
  'sam_sharpness',
  'spectral_density',
  'top_hessian_eigenvalues',
  'weight_distance',
]
