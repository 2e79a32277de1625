"""Learning-rate schedules from the papers: SWA and FGE cycles."""

from optax_zoo.schedules._cyclic import fge_schedule, swa_schedule

# >>> imports D

__all__ = [
  'fge_schedule',
  'swa_schedule',
  # >>> __all__ D
]
