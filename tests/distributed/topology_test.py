"""Topologies: mixing matrices, spectral gaps, exchanges and validation."""

import numpy as np
import pytest

import optax_zoo

TOPOLOGIES = {
  'ring8': optax_zoo.ring(8),
  'ring2': optax_zoo.ring(2),
  'torus2x4': optax_zoo.torus(2, 4),
  'torus3x3': optax_zoo.torus(3, 3),
  'torus1x1': optax_zoo.torus(1, 1),
  'exponential8': optax_zoo.exponential(8),
  'exponential6': optax_zoo.exponential(6),
  'one_peer8': optax_zoo.one_peer_exponential(8),
  'one_peer6': optax_zoo.one_peer_exponential(6),
  'complete5': optax_zoo.complete(5),
}
SYMMETRIC = {'ring8', 'ring2', 'torus2x4', 'torus3x3', 'torus1x1', 'complete5'}


def _random_doubly_stochastic(n, seed):
  """A ring plus random permutations (Birkhoff): doubly stochastic,
  connected, neither symmetric nor circulant."""
  rng = np.random.default_rng(seed)
  w = 0.3 * np.eye(n) + 0.2 * np.roll(np.eye(n), 1, axis=1)
  for a in rng.dirichlet(np.ones(3)) * 0.5:
    w += a * np.eye(n)[rng.permutation(n)]
  return w


@pytest.mark.parametrize('name', TOPOLOGIES)
def test_mixing_matrices_are_doubly_stochastic(name):
  t = TOPOLOGIES[name]
  for step in range(t.period):
    w = t.mixing_matrix(step)
    assert w.shape == (t.num_workers, t.num_workers)
    assert np.all(w >= 0)
    np.testing.assert_allclose(w.sum(axis=0), 1, atol=1e-12)
    np.testing.assert_allclose(w.sum(axis=1), 1, atol=1e-12)
    if name in SYMMETRIC:
      np.testing.assert_allclose(w, w.T, atol=1e-12)


def test_constructors_build_the_papers_matrices():
  n = 8
  shift = lambda k: np.roll(np.eye(n), k, axis=1)
  np.testing.assert_allclose(
    optax_zoo.ring(n).mixing_matrix(), (np.eye(n) + shift(1) + shift(-1)) / 3
  )
  np.testing.assert_allclose(
    optax_zoo.exponential(n).mixing_matrix(),
    (np.eye(n) + shift(1) + shift(2) + shift(4)) / 4,
  )
  one_peer = optax_zoo.one_peer_exponential(n)
  for t in range(7):
    np.testing.assert_allclose(
      one_peer.mixing_matrix(t), (np.eye(n) + shift(2 ** (t % 3))) / 2
    )
  torus = optax_zoo.torus(3, 4).mixing_matrix()
  r, c = divmod(5, 4)  # worker 5 = (1, 1)
  neighbours = {
    ((r + dr) % 3) * 4 + (c + dc) % 4
    for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1))
  }
  assert set(np.flatnonzero(torus[5])) == {5, *neighbours}
  np.testing.assert_allclose(torus[5][torus[5] > 0], 0.2)
  np.testing.assert_allclose(optax_zoo.complete(4).mixing_matrix(), 0.25)
  np.testing.assert_array_equal(optax_zoo.ring(1).mixing_matrix(), [[1.0]])


@pytest.mark.parametrize('name', TOPOLOGIES)
def test_spectral_gap_matches_numpy(name):
  t = TOPOLOGIES[name]
  product = np.eye(t.num_workers)
  for step in range(t.period):
    product = t.mixing_matrix(step) @ product
  moduli = np.sort(np.abs(np.linalg.eigvals(product)))[::-1]
  second = moduli[1] if len(moduli) > 1 else 0.0
  # An exactly averaging product (one-peer exponential over its period) has
  # second modulus 0; eigvals returns roundoff (~1e-16), which the
  # 1/period root below would inflate to ~1e-5.
  second = 0.0 if second < 1e-12 else second
  assert t.spectral_gap == pytest.approx(1 - second ** (1 / t.period), abs=1e-9)


def test_spectral_gaps_of_known_graphs():
  assert optax_zoo.ring(8).spectral_gap == pytest.approx(
    1 - (1 + 2 * np.cos(2 * np.pi / 8)) / 3
  )
  assert optax_zoo.complete(6).spectral_gap == pytest.approx(1.0)
  # One-peer exponential graphs average exactly over a period on 2^k
  # workers (Ying et al. 2021, Lemma 1), not on others.
  assert optax_zoo.one_peer_exponential(8).spectral_gap == pytest.approx(1.0)
  assert optax_zoo.one_peer_exponential(6).spectral_gap < 1 - 1e-3


def test_exchanges_are_shifts_that_rebuild_w():
  ring = optax_zoo.ring(8)
  assert sorted(e.shift for e in ring.exchanges()) == [1, 7]
  assert [e.weight for e in ring.exchanges()] == [pytest.approx(1 / 3)] * 2
  assert sorted(e.shift for e in optax_zoo.exponential(8).exchanges()) == [
    1,
    2,
    4,
  ]
  one_peer = optax_zoo.one_peer_exponential(8)
  assert [[e.shift for e in one_peer.exchanges(t)] for t in range(4)] == [
    [1],
    [2],
    [4],
    [1],
  ]
  w = _random_doubly_stochastic(6, 0)
  t = optax_zoo.from_mixing_matrix(w)
  np.testing.assert_allclose(t.mixing_matrix(), w, atol=1e-12)
  rebuilt = np.zeros_like(w)
  for e in t.exchanges():
    assert e.weight is None or len(set(e.weights)) == 1
    for dst, src in enumerate(e.sources):
      assert (src, dst) in e.perm
      rebuilt[dst, src] += e.weights[dst]
  np.testing.assert_allclose(rebuilt, w - np.diag(np.diag(w)), atol=1e-12)


def test_degree_and_messages():
  assert optax_zoo.ring(8).degree == 2
  assert optax_zoo.ring(2).degree == 1
  assert optax_zoo.torus(3, 3).degree == 4
  assert optax_zoo.torus(2, 4).degree == 3  # the two row neighbours coincide
  assert optax_zoo.torus(2, 4).messages_per_step == 3
  assert optax_zoo.exponential(8).degree == 3
  assert optax_zoo.one_peer_exponential(8).degree == 1
  assert optax_zoo.complete(5).degree == 4
  assert optax_zoo.ring(1).degree == 0
  t = optax_zoo.from_mixing_matrix(_random_doubly_stochastic(6, 1))
  assert t.messages_per_step >= t.degree


def test_time_varying_switches_with_the_step():
  t = optax_zoo.one_peer_exponential(8)
  assert t.time_varying and t.period == 3
  ws = [t.mixing_matrix(s) for s in range(4)]
  assert not np.allclose(ws[0], ws[1])
  assert not np.allclose(ws[1], ws[2])
  np.testing.assert_array_equal(ws[3], ws[0])
  assert not optax_zoo.ring(8).time_varying


@pytest.mark.parametrize(
  ('w', 'match'),
  [
    ([[0.5, 0.5], [0.2, 0.8]], 'doubly stochastic'),
    ([[0.6, 0.5], [0.4, 0.5]], 'doubly stochastic'),
    ([[1.5, -0.5], [-0.5, 1.5]], 'nonnegative'),
    (np.eye(3), 'connected'),
    (np.kron(np.eye(2), np.full((2, 2), 0.5)), 'connected'),
    (np.ones((2, 3)) / 3, 'square'),
    ([[np.nan]], 'finite'),
    ('ring', 'numeric'),
  ],
)
def test_bad_mixing_matrix_raises(w, match):
  with pytest.raises(ValueError, match=rf'mixing_matrix.*{match}'):
    optax_zoo.from_mixing_matrix(w)


def test_connectivity_is_over_the_union_of_a_period():
  cycle = np.roll(np.eye(4), 1, axis=1)  # directed, strongly connected
  assert optax_zoo.from_mixing_matrix(cycle).degree == 1
  pairs = optax_zoo.Exchange((1, 0, 3, 2), (0.5,) * 4)  # {0, 1}, {2, 3}
  across = optax_zoo.Exchange((3, 2, 1, 0), (0.5,) * 4)  # {0, 3}, {1, 2}
  t = optax_zoo.Topology('alternating', 4, ((pairs,), (across,)))
  assert t.period == 2 and t.spectral_gap == pytest.approx(1.0)
  with pytest.raises(ValueError, match=r'schedule.*connected'):
    optax_zoo.Topology('pairs', 4, ((pairs,), (pairs,)))
  with pytest.raises(ValueError, match=r'schedule.*permutations'):
    optax_zoo.Topology(
      'bad', 3, ((optax_zoo.Exchange((0, 0, 1), (0.5,) * 3),),)
    )


@pytest.mark.parametrize('bad', [0, -1, 2.0, True, '4', None])
def test_bad_worker_counts_raise(bad):
  for make in (
    optax_zoo.ring,
    optax_zoo.exponential,
    optax_zoo.one_peer_exponential,
    optax_zoo.complete,
  ):
    with pytest.raises(ValueError, match='num_workers'):
      make(bad)
  with pytest.raises(ValueError, match='rows'):
    optax_zoo.torus(bad, 2)
  with pytest.raises(ValueError, match='cols'):
    optax_zoo.torus(2, bad)


def test_topologies_are_hashable_and_not_callable():
  # inject_hyperparams takes callables for schedules and needs hashable
  # static arguments.
  assert hash(optax_zoo.ring(4)) == hash(optax_zoo.ring(4))
  assert not callable(optax_zoo.ring(4))


@pytest.mark.parametrize('off', [9e-7, 5e-6, 8e-6])
def test_mixing_matrix_is_validated_as_given(off):
  # Doubly stochastic only within the tolerance, in directions that add
  # up once the diagonal is 1 minus the off-diagonal row sum.
  w = [[0.5, 0.5 - off], [0.5 + off, 0.5]]
  with pytest.raises(ValueError, match=r'^`mixing_matrix`.*doubly stochastic'):
    optax_zoo.from_mixing_matrix(w)


def test_implied_diagonal_is_the_given_one_within_the_tolerance():
  w = np.full((3, 3), 1 / 3)
  w[0, 0] += 4e-7  # row 0 and column 0 sum to 1 + 4e-7
  got = optax_zoo.from_mixing_matrix(w).mixing_matrix()
  off = ~np.eye(3, dtype=bool)
  np.testing.assert_array_equal(got[off], w[off])
  np.testing.assert_allclose(got, w, rtol=0, atol=1e-6)


def test_tolerance_is_absolute():
  # Column sums 1 +- 5e-6 are 5x the documented 1e-6.
  skewed = optax_zoo.Exchange((1, 0), (0.5, 0.5 + 5e-6))
  with pytest.raises(ValueError, match=r'schedule.*doubly stochastic'):
    optax_zoo.Topology('skewed', 2, ((skewed,),))
