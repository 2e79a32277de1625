"""Learning-rate schedules from the papers: SWA and FGE cycles, SGDR warm
restarts, LEGW warmup and the batch-size scaling rules."""

from optax_zoo.schedules._batch import legw_schedule, scale_lr_for_batch
from optax_zoo.schedules._cyclic import fge_schedule, swa_schedule
from optax_zoo.schedules._sgdr import sgdr_schedule

__all__ = [
  'fge_schedule',
  'legw_schedule',
  'scale_lr_for_batch',
  'sgdr_schedule',
  'swa_schedule',
]
