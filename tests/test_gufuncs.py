"""The M-steps' direct calls of numpy's linalg ufuncs equal ``np.linalg``'s.

:mod:`skvi._covariance._gufuncs` skips ``np.linalg``'s Python layer; the
select_model tables are compared byte for byte across versions, so each
call must return the same bits as ``np.linalg`` and fail as it does.
"""

import numpy as np
import pytest

from skvi._covariance import _gufuncs
from skvi._covariance.stacked import _layout


def _same(found, expected):
    if isinstance(expected, tuple):
        assert len(found) == len(expected)
        for one, other in zip(found, expected, strict=True):
            _same(one, other)
        return
    found, expected = np.asarray(found), np.asarray(expected)
    assert found.dtype == expected.dtype
    assert found.shape == expected.shape
    assert found.tobytes() == expected.tobytes()


def _stacks(rng, n_features, dtype=np.float64):
    raw = rng.standard_normal((7, n_features, n_features))
    spd = raw @ raw.swapaxes(1, 2) + 0.1 * np.eye(n_features)
    return spd.astype(dtype), raw.astype(dtype)


@pytest.mark.parametrize("n_features", [1, 2, 3, 4, 6])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_same_bits_as_numpy(n_features, dtype):
    rng = np.random.default_rng(n_features)
    spd, raw = _stacks(rng, n_features, dtype)
    vectors = rng.standard_normal((7, n_features, 2)).astype(dtype)
    _same(_gufuncs.cholesky(spd), np.linalg.cholesky(spd))
    _same(_gufuncs.solve(raw, vectors), np.linalg.solve(raw, vectors))
    _same(
        _gufuncs.solve(raw[0], vectors[0, :, 0]),
        np.linalg.solve(raw[0], vectors[0, :, 0]),
    )
    _same(_gufuncs.inv(raw), np.linalg.inv(raw))
    _same(tuple(_gufuncs.eigh(spd)), tuple(np.linalg.eigh(spd)))
    _same(tuple(_gufuncs.slogdet(raw)), tuple(np.linalg.slogdet(raw)))
    _same(
        _gufuncs.einsum("kji,kjl,kli->ki", raw, spd, raw),
        np.einsum("kji,kjl,kli->ki", raw, spd, raw),
    )


def test_fails_as_numpy():
    rng = np.random.default_rng(0)
    spd, raw = _stacks(rng, 3)
    not_definite = spd.copy()
    not_definite[4] = -not_definite[4]
    with pytest.raises(np.linalg.LinAlgError):
        np.linalg.cholesky(not_definite)
    with pytest.raises(np.linalg.LinAlgError):
        _gufuncs.cholesky(not_definite)
    singular = raw.copy()
    singular[2] = 0.0
    for function in (np.linalg.inv, _gufuncs.inv):
        with pytest.raises(np.linalg.LinAlgError):
            function(singular)
    vectors = np.ones((7, 3, 1))
    for function in (np.linalg.solve, _gufuncs.solve):
        with pytest.raises(np.linalg.LinAlgError):
            function(singular, vectors)
    # A failed call leaves no error state behind: later arithmetic warns
    # (or not) as before.
    with np.errstate(invalid="raise"), pytest.raises(FloatingPointError):
        np.sqrt(-np.ones(2))


@pytest.mark.parametrize("sizes", [[3], [1, 4, 2], [2, 2, 2], (5, 1)])
def test_layout(sizes):
    layout = _layout(sizes)
    expected = np.asarray(sizes)
    np.testing.assert_array_equal(layout.sizes, expected)
    np.testing.assert_array_equal(layout.ends, np.cumsum(expected))
    np.testing.assert_array_equal(layout.starts, np.cumsum(expected) - expected)
    owners = np.repeat(np.arange(len(expected)), expected)
    np.testing.assert_array_equal(layout.owners, owners)
    slots = np.concatenate([np.arange(size) for size in expected])
    np.testing.assert_array_equal(layout.slots, slots)
    assert layout.width == max(sizes)
    assert layout.uniform == (len(set(sizes)) == 1)
    padded = {(f, s) for f, size in enumerate(sizes) for s in range(size, max(sizes))}
    assert set(zip(*layout.padded, strict=True)) == padded
    # Shared by later calls: nothing may write into it.
    assert _layout(list(sizes)) is layout
    with pytest.raises(ValueError):
        layout.owners[0] = 1
