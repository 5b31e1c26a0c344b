"""splits: a row's train/valid/test split, assigned from a stable hash of its id.

Each id is hashed (blake2b of `<seed>:<id>`, independent of the Python process, the platform, pandas
and the table) to a number u in [0, 1): u < test_size is test, u < test_size + valid_size is valid,
the rest is train. A row's split therefore depends only on its id, the seed and the two fractions:
appending, deleting or reordering other rows never moves it, so a re-ingested table cannot put a row
the champion trained on into the new test split.

Stratification is approximate: the hash ignores the label, so each split's positive rate matches the
table's up to sampling noise (about sqrt(r(1-r)/n) for a split of n rows, e.g. ±1.2 points for 1,400
test rows at r = 0.27), and split sizes match the fractions up to similar noise.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import numpy as np

NAMES = ("train", "valid", "test")
_SCALE = float(2**64)


def _key(value: Any) -> bytes:
    """The id as text: integers as decimal digits whatever their dtype, so 17, 17.0 and "17" agree."""
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)
    elif isinstance(value, np.integer):
        value = int(value)
    return str(value).encode()


def unit_hash(ids: Iterable[Any], seed: int) -> np.ndarray:
    """A stable pseudo-random number in [0, 1) per id."""
    salt = f"{seed}:".encode()
    out = [
        int.from_bytes(hashlib.blake2b(salt + _key(v), digest_size=8).digest(), "big") / _SCALE for v in ids
    ]
    return np.asarray(out, dtype=np.float64)


def assign(ids: Iterable[Any], seed: int, test_size: float, valid_size: float) -> np.ndarray:
    """The split name of each id ("train", "valid" or "test"), as an array of str.

    Raises:
        ValueError: test_size + valid_size is not below 1.
    """
    if not 0.0 < test_size + valid_size < 1.0:
        raise ValueError("featurize: test_size + valid_size must be below 1")
    u = unit_hash(ids, seed)
    return np.where(u < test_size, "test", np.where(u < test_size + valid_size, "valid", "train"))
