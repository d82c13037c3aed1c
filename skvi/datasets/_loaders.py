"""Loaders for the data files in ``skvi/datasets/data``."""

import csv
from importlib import resources

import numpy as np
from sklearn.utils import Bunch

_OLD_FAITHFUL_DESCR = """\
Old Faithful geyser, Yellowstone National Park
----------------------------------------------

272 eruptions with two measurements each:

- ``eruptions``: eruption duration, in minutes;
- ``waiting``: waiting time to the next eruption, in minutes.

Two well-separated clusters (short and long eruptions) make it the classic
first data set for Gaussian mixtures (Bishop 2006, appendix A).

This is the ``faithful`` data set distributed with R's ``datasets``
package (sources: W. Haerdle, Smoothing Techniques with Implementation in
S, 1991; A. Azzalini and A. W. Bowman, Applied Statistics 39, 1990).
Public domain measurements.
"""


def load_old_faithful(*, return_X_y=False):
    """Load the Old Faithful eruptions (272 samples, 2 features).

    Parameters
    ----------
    return_X_y : bool, default=False
        If True, return the data array alone instead of a Bunch (the data
        set has no target; this mirrors scikit-learn's loaders).

    Returns
    -------
    data : :class:`~sklearn.utils.Bunch` or ndarray of shape (272, 2)
        A Bunch with ``data`` (float64 array), ``feature_names`` and
        ``DESCR``; or the array alone when ``return_X_y`` is True.

    Examples
    --------
    >>> from skvi.datasets import load_old_faithful
    >>> faithful = load_old_faithful()
    >>> faithful.data.shape
    (272, 2)
    >>> faithful.feature_names
    ['eruptions', 'waiting']
    """
    path = resources.files("skvi.datasets").joinpath("data", "old_faithful.csv")
    with path.open("r", newline="") as handle:
        rows = list(csv.reader(handle))
    feature_names = rows[0]
    data = np.array(rows[1:], dtype=float)
    if return_X_y:
        return data
    return Bunch(data=data, feature_names=feature_names, DESCR=_OLD_FAITHFUL_DESCR)
