"""Small classification data sets that are generated or bundled locally.

Nothing here touches the network: MNIST-1D is generated with the `mnist1d`
package's own generator (and cached on disk), sklearn's digits ship with
scikit-learn. Both need the ``experiments`` extra.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import json
import os
import pathlib
import random
import tempfile
import warnings
from types import ModuleType

import numpy as np

from optax_zoo._src import validation as v

__all__ = [
  'Dataset',
  'default_cache_dir',
  'digits',
  'mnist1d',
  'with_label_noise',
]

_MAX_SEED = 2**32 - 1
_NUM_CLASSES = 10


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A classification data set held as NumPy arrays.

  Attributes:
    x_train: float32 features, shape ``(num_train, num_features)``.
    y_train: int32 labels in ``[0, num_classes)``, shape ``(num_train,)``.
    x_test: float32 features, shape ``(num_test, num_features)``.
    y_test: int32 labels, shape ``(num_test,)``.
    num_classes: the number of classes.
    name: a short name for tables and plots.
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  num_classes: int
  name: str

  @property
  def num_features(self) -> int:
    return self.x_train.shape[1]


def _missing(package: str) -> ImportError:
  return ImportError(
    f'{package} is needed for this data set: pip install {package} '
    "(or pip install 'optax-zoo[experiments]')."
  )


def _import_extra(module: str, package: str) -> ModuleType:
  try:
    return importlib.import_module(module)
  except ImportError as e:
    raise _missing(package) from e


def default_cache_dir() -> pathlib.Path:
  """The directory for cached data sets.

  ``$OPTAX_ZOO_CACHE`` if set, else ``$XDG_CACHE_HOME/optax_zoo``, else
  ``~/.cache/optax_zoo``.
  """
  if os.environ.get('OPTAX_ZOO_CACHE'):
    return pathlib.Path(os.environ['OPTAX_ZOO_CACHE'])
  xdg = os.environ.get('XDG_CACHE_HOME') or pathlib.Path.home() / '.cache'
  return pathlib.Path(xdg) / 'optax_zoo'


def _save_atomically(path: pathlib.Path, **arrays: np.ndarray) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  # A reader, or a second process generating the same file, must never see a
  # half-written archive, so write elsewhere in the directory and rename.
  fd, tmp = tempfile.mkstemp(dir=path.parent, suffix='.npz.tmp')
  try:
    with os.fdopen(fd, 'wb') as f:
      np.savez(f, **arrays)
    os.replace(tmp, path)
  except BaseException:
    pathlib.Path(tmp).unlink(missing_ok=True)
    raise


def _generate_mnist1d(seed: int, num_samples: int) -> dict[str, np.ndarray]:
  data = _import_extra('mnist1d.data', 'mnist1d')
  args = data.get_dataset_args()
  args.seed = seed
  args.num_samples = num_samples
  # make_dataset reseeds the global NumPy and `random` generators; the caller's
  # streams must come out of this call as they went in.
  np_state = np.random.get_state()  # noqa: NPY002
  py_state = random.getstate()
  try:
    ds = data.make_dataset(args)
  finally:
    np.random.set_state(np_state)  # noqa: NPY002
    random.setstate(py_state)
  return {
    'x_train': ds['x'].astype(np.float32),
    'y_train': ds['y'].astype(np.int32),
    'x_test': ds['x_test'].astype(np.float32),
    'y_test': ds['y_test'].astype(np.int32),
  }


def mnist1d(
  seed: int = 42,
  *,
  num_samples: int = 5000,
  cache_dir: str | os.PathLike | None = None,
) -> Dataset:
  """MNIST-1D (Greydanus & Kobak, 2020), generated locally and cached.

  Uses ``mnist1d.data.make_dataset`` with the package's default arguments
  (``seed=42, num_samples=5000`` gives the published data set: 4000 training
  and 1000 test sequences of length 40), never the download path. The arrays
  are cached as ``.npz`` in ``cache_dir`` (default: `default_cache_dir()`),
  keyed by ``seed``, ``num_samples`` and the installed mnist1d version. The
  global NumPy and `random` generator states are left as they were.

  Args:
    seed: the generator seed, an integer in [0, 2**32 - 1].
    num_samples: sequences to generate, a positive multiple of 10 (an equal
      share per digit); 80% go to the training split.
    cache_dir: where to cache the arrays; default `default_cache_dir()`.

  Returns:
    The `Dataset`, features float32 standardized over the whole set.
  """
  v.check_int('seed', seed, minimum=0, maximum=_MAX_SEED)
  v.check_int('num_samples', num_samples, minimum=10)
  if num_samples % _NUM_CLASSES:
    raise ValueError(
      '`num_samples` must be a positive multiple of 10 (an equal share per '
      f'digit), got {num_samples!r}.'
    )
  try:
    version = importlib.metadata.version('mnist1d')
  except importlib.metadata.PackageNotFoundError as e:
    raise _missing('mnist1d') from e
  key = json.dumps(
    {'seed': seed, 'num_samples': num_samples, 'mnist1d': version},
    sort_keys=True,
  )
  digest = hashlib.sha256(key.encode()).hexdigest()[:16]
  root = pathlib.Path(cache_dir or default_cache_dir())
  path = root / f'mnist1d-{digest}.npz'
  arrays = None
  if path.exists():
    try:
      with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
      warnings.warn(
        f'regenerating unreadable cache file {path}: {e}', stacklevel=2
      )
  if arrays is None:
    arrays = _generate_mnist1d(seed, num_samples)
    try:
      _save_atomically(path, **arrays)
    except OSError as e:
      warnings.warn(f'could not cache MNIST-1D at {path}: {e}', stacklevel=2)
  return Dataset(**arrays, num_classes=_NUM_CLASSES, name='mnist1d')


def digits(seed: int = 0, *, test_fraction: float = 0.2) -> Dataset:
  """scikit-learn's 8x8 handwritten digits, a fast smoke-test data set.

  1797 images bundled with scikit-learn, flattened to 64 features scaled to
  [0, 1], split into train and test stratified by class.

  Args:
    seed: seeds the split, an integer in [0, 2**32 - 1].
    test_fraction: the share of samples in the test split, in [0.01, 0.99].

  Returns:
    The `Dataset`.

  Example:
    >>> from optax_zoo.training import digits
    >>> ds = digits()
    >>> ds.x_train.shape, ds.x_test.shape, ds.num_classes
    ((1437, 64), (360, 64), 10)
  """
  v.check_int('seed', seed, minimum=0, maximum=_MAX_SEED)
  v.check_in_range(
    'test_fraction', test_fraction, 0.01, 0.99, high_inclusive=True
  )
  datasets = _import_extra('sklearn.datasets', 'scikit-learn')
  model_selection = _import_extra('sklearn.model_selection', 'scikit-learn')
  x, y = datasets.load_digits(return_X_y=True)
  x_train, x_test, y_train, y_test = model_selection.train_test_split(
    x, y, test_size=test_fraction, random_state=seed, stratify=y
  )
  scale = np.float32(1 / 16)  # pixel intensities are integers in [0, 16]
  return Dataset(
    x_train=x_train.astype(np.float32) * scale,
    y_train=y_train.astype(np.int32),
    x_test=x_test.astype(np.float32) * scale,
    y_test=y_test.astype(np.int32),
    num_classes=_NUM_CLASSES,
    name='digits',
  )


def with_label_noise(data: Dataset, fraction: float, seed: int = 0) -> Dataset:
  """``data`` with symmetric label noise on its training split.

  Exactly ``round(fraction * num_train)`` training examples, drawn without
  replacement, get a label drawn uniformly from the other classes, so the
  corrupted fraction is exact and every corrupted label is wrong (the
  setting of the SAM paper's label-noise experiment). The test labels stay
  clean; the features are shared with ``data``.

  Args:
    data: the clean `Dataset`.
    fraction: the share of training labels to corrupt, in [0, 1].
    seed: seeds the choice of examples and of their new labels, an integer
      in [0, 2**32 - 1].

  Returns:
    A new `Dataset` named ``f'{data.name}-noise{fraction:g}'``.

  Example:
    >>> from optax_zoo.training import digits
    >>> from optax_zoo.training.data import with_label_noise
    >>> clean = digits()
    >>> noisy = with_label_noise(clean, 0.2, seed=0)
    >>> float((noisy.y_train != clean.y_train).mean().round(3))
    0.2
    >>> bool((noisy.y_test == clean.y_test).all())
    True
  """
  v.check_in_range('fraction', fraction, 0.0, 1.0, high_inclusive=True)
  v.check_int('seed', seed, minimum=0, maximum=_MAX_SEED)
  if data.num_classes < 2:
    raise ValueError(
      f'`data` must have at least 2 classes to flip labels, got '
      f'{data.num_classes}.'
    )
  rng = np.random.default_rng(seed)
  labels = data.y_train.copy()
  n = len(labels)
  chosen = rng.choice(n, size=round(float(fraction) * n), replace=False)
  # An offset in [1, num_classes) moves each chosen label to another class,
  # uniformly.
  offset = rng.integers(1, data.num_classes, size=chosen.size)
  labels[chosen] = (labels[chosen] + offset) % data.num_classes
  return dataclasses.replace(
    data, y_train=labels.astype(np.int32), name=f'{data.name}-noise{fraction:g}'
  )
