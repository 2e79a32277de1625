"""Decentralized and compressed-communication training across devices.

Every method is an optax transform with an ``axis_name``, called inside
`jax.shard_map` (or `jax.vmap` with ``axis_name`` to simulate workers on one
device); on an axis of size one it is exactly the single-device method. JAX's
own runtime (XLA collectives, `jax.distributed` across processes) carries the
messages; this package adds the algorithms: topologies and D-PSGD gossip,
compressors with fixed payloads, compressed averaging with error feedback,
and communication accounting read from the lowered program.
"""

from optax_zoo.distributed._block_admm import (
  ADMMBlock,
  BlockADMM,
  BlockADMMState,
  block_admm,
  nmf_block,
)
from optax_zoo.distributed._comm import (
  Collective,
  WireBytes,
  alpha_beta_time,
  busiest_node_bytes,
  busiest_worker_bytes,
  collective_bytes,
  information_bits,
  summarize_collectives,
  wire_bytes,
  worker_bytes,
)
from optax_zoo.distributed._compressed import (
  AdaCompState,
  CompressedMeanState,
  ErrorFeedbackState,
  adacomp,
  compressed_mean,
  error_feedback,
  natural_compression,
  natural_dithering,
  scale_by_adacomp,
)
from optax_zoo.distributed._compressors import (
  Compressor,
  identity_compressor,
  natural_compressor,
  natural_dithering_compressor,
  random_k_compressor,
  top_k_compressor,
)
from optax_zoo.distributed._fedavg import (
  FedAvgState,
  dirichlet_split,
  fedavg,
  fisher_importance,
)
from optax_zoo.distributed._gossip import (
  GossipState,
  all_reduce_mean,
  consensus_distance,
  gossip,
  worker_mean,
)
from optax_zoo.distributed._mesh import (
  init_on_workers,
  place_on_mesh,
  replicate_on_mesh,
  shard_workers,
  to_host,
  worker_map,
  worker_mesh,
  worker_specs,
)
from optax_zoo.distributed._nonblocking import (
  DelayModel,
  NonBlockingState,
  finished_microbatches,
  nonblocking_sgd,
  simulated_step_time,
)
from optax_zoo.distributed._topology import (
  Exchange,
  Topology,
  complete,
  exponential,
  from_mixing_matrix,
  one_peer_exponential,
  ring,
  torus,
)

__all__ = [
  'ADMMBlock',
  'AdaCompState',
  'BlockADMM',
  'BlockADMMState',
  'Collective',
  'CompressedMeanState',
  'Compressor',
  'DelayModel',
  'ErrorFeedbackState',
  'Exchange',
  'FedAvgState',
  'GossipState',
  'NonBlockingState',
  'Topology',
  'WireBytes',
  'adacomp',
  'all_reduce_mean',
  'alpha_beta_time',
  'block_admm',
  'busiest_node_bytes',
  'busiest_worker_bytes',
  'collective_bytes',
  'complete',
  'compressed_mean',
  'consensus_distance',
  'dirichlet_split',
  'error_feedback',
  'exponential',
  'fedavg',
  'finished_microbatches',
  'fisher_importance',
  'from_mixing_matrix',
  'gossip',
  'identity_compressor',
  'information_bits',
  'init_on_workers',
  'natural_compression',
  'natural_compressor',
  'natural_dithering',
  'natural_dithering_compressor',
  'nmf_block',
  'nonblocking_sgd',
  'one_peer_exponential',
  'place_on_mesh',
  'random_k_compressor',
  'replicate_on_mesh',
  'ring',
  'scale_by_adacomp',
  'shard_workers',
  'simulated_step_time',
  'summarize_collectives',
  'to_host',
  'top_k_compressor',
  'torus',
  'wire_bytes',
  'worker_bytes',
  'worker_map',
  'worker_mean',
  'worker_mesh',
  'worker_specs',
]
