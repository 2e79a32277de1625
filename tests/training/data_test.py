"""Tests for the local data sets."""

import random

import numpy as np
import pytest

from optax_zoo.training import data as data_lib


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
  monkeypatch.setenv('OPTAX_ZOO_CACHE', str(tmp_path / 'cache'))


def _assert_same(a, b):
  for field in ('x_train', 'y_train', 'x_test', 'y_test'):
    np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_mnist1d_has_the_published_shapes_and_dtypes():
  ds = data_lib.mnist1d()
  assert ds.x_train.shape == (4000, 40)
  assert ds.x_test.shape == (1000, 40)
  assert ds.y_train.shape == (4000,)
  assert ds.y_test.shape == (1000,)
  assert ds.x_train.dtype == np.float32
  assert ds.y_train.dtype == np.int32
  assert ds.num_classes == 10
  assert ds.name == 'mnist1d'
  assert set(np.unique(ds.y_train)) == set(range(10))


def test_mnist1d_splits_80_20():
  ds = data_lib.mnist1d(0, num_samples=200)
  assert len(ds.y_train) == 160
  assert len(ds.y_test) == 40


def test_mnist1d_is_deterministic_per_seed(tmp_path):
  a = data_lib.mnist1d(3, num_samples=100, cache_dir=tmp_path / 'a')
  b = data_lib.mnist1d(3, num_samples=100, cache_dir=tmp_path / 'b')
  c = data_lib.mnist1d(4, num_samples=100, cache_dir=tmp_path / 'a')
  _assert_same(a, b)
  assert not np.array_equal(a.x_train, c.x_train)


def test_mnist1d_cache_hit_returns_identical_arrays(tmp_path, monkeypatch):
  first = data_lib.mnist1d(5, num_samples=100)
  (cached,) = (tmp_path / 'cache').glob('mnist1d-*.npz')
  assert not list((tmp_path / 'cache').glob('*.tmp'))

  def fail(*args):
    raise AssertionError('regenerated despite a cache hit')

  monkeypatch.setattr(data_lib, '_generate_mnist1d', fail)
  second = data_lib.mnist1d(5, num_samples=100)
  _assert_same(first, second)
  assert cached.exists()


def test_mnist1d_regenerates_a_corrupt_cache_file(tmp_path):
  first = data_lib.mnist1d(6, num_samples=100)
  (cached,) = (tmp_path / 'cache').glob('mnist1d-*.npz')
  cached.write_bytes(b'not an npz')
  with pytest.warns(UserWarning, match='unreadable'):
    second = data_lib.mnist1d(6, num_samples=100)
  _assert_same(first, second)


def test_default_cache_dir_follows_the_environment(tmp_path, monkeypatch):
  assert data_lib.default_cache_dir() == tmp_path / 'cache'
  monkeypatch.delenv('OPTAX_ZOO_CACHE')
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path / 'xdg'))
  assert data_lib.default_cache_dir() == tmp_path / 'xdg' / 'optax_zoo'


def test_mnist1d_leaves_the_global_rngs_alone():
  np.random.seed(123)  # noqa: NPY002
  random.seed(123)
  expected_np = np.random.random(3)  # noqa: NPY002
  expected_py = random.random()
  np.random.seed(123)  # noqa: NPY002
  random.seed(123)
  data_lib.mnist1d(7, num_samples=100)
  np.testing.assert_array_equal(np.random.random(3), expected_np)  # noqa: NPY002
  assert random.random() == expected_py


def test_digits_is_scaled_and_stratified():
  ds = data_lib.digits()
  assert ds.x_train.shape == (1437, 64)
  assert ds.x_test.shape == (360, 64)
  assert ds.x_train.dtype == np.float32
  assert ds.y_test.dtype == np.int32
  assert 0.0 <= ds.x_train.min() and ds.x_train.max() == 1.0
  counts = np.bincount(ds.y_test, minlength=10)
  assert counts.min() >= 35 and counts.max() <= 37


def test_digits_split_is_seeded():
  _assert_same(data_lib.digits(1), data_lib.digits(1))
  assert not np.array_equal(
    data_lib.digits(1).y_test, data_lib.digits(2).y_test
  )
  assert len(data_lib.digits(test_fraction=0.5).y_test) == 899


@pytest.mark.parametrize(
  ('fn', 'kwargs', 'match'),
  [
    (data_lib.mnist1d, {'seed': -1}, '`seed`'),
    (data_lib.mnist1d, {'seed': 2**32}, r'`seed`.*\[0, 4294967295\]'),
    (data_lib.mnist1d, {'seed': 1.5}, '`seed`'),
    (data_lib.mnist1d, {'num_samples': 0}, '`num_samples`.*>= 10'),
    (data_lib.mnist1d, {'num_samples': 105}, '`num_samples`.*multiple of 10'),
    (data_lib.digits, {'seed': -3}, '`seed`.*-3'),
    (data_lib.digits, {'test_fraction': 0.0}, r'`test_fraction`.*\[0.01'),
    (data_lib.digits, {'test_fraction': 1.0}, '`test_fraction`.*1.0'),
  ],
)
def test_bad_arguments_raise_value_error(fn, kwargs, match):
  with pytest.raises(ValueError, match=match):
    fn(**kwargs)
