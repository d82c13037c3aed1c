"""Initial responsibilities for each ``init_params`` method.

Each method returns a function of a slice of rows giving those rows'
responsibilities, so the statistics of the initial q(Z) are accumulated chunk
by chunk like every E-step, and no (n_samples, n_components) array is held.
The random draws match scikit-learn's for the same ``random_state`` when all
sample weights are positive.
"""

import numpy as np
from sklearn.cluster import KMeans, kmeans_plusplus

from ._agglomeration import MAX_AGGLOMERATED_ROWS, hc_labels

# The starts of a hierarchical agglomeration: they draw from the random
# state only to subsample rows.
AGGLOMERATIVE = ("hc", "hc_mclust", "ward")
# The tree each of them cuts (skvi._agglomeration.hc_labels' criterion).
TREE_CRITERIA = {"hc": "vvv", "hc_mclust": "mclust", "ward": "ward"}


def initial_responsibilities(
    X, sample_weight, n_components, method, random_state, weight_unit=1.0
):
    """A function ``rows -> responsibilities`` for the chosen method.

    Parameters
    ----------
    X : ndarray of shape (n, D)
    sample_weight : ndarray of shape (n,)
        Rows of zero weight are never chosen as seeds.
    n_components : int
    method : {"kmeans", "k-means++", "random", "random_from_data", "hc", \
"hc_mclust", "ward"}
    random_state : numpy.random.RandomState or None
        Advanced exactly as scikit-learn's GaussianMixture advances it (for
        "hc" and "ward": only when the rows are subsampled). None where
        :func:`draws_random` says that no draw is made.
    weight_unit : float, default=1.0
        The caller's weights are ``sample_weight * weight_unit`` (a power of
        two): the agglomerations read whole numbers among them as counts.
    """
    if method in AGGLOMERATIVE:
        labels = hc_labels(
            X,
            sample_weight * weight_unit,
            n_components,
            random_state,
            TREE_CRITERIA[method],
        )
        return _one_hot_labels(labels, n_components)
    if method == "kmeans":
        labels = (
            KMeans(n_clusters=n_components, n_init=1, random_state=random_state)
            .fit(X, sample_weight=sample_weight)
            .labels_
        )
        return _one_hot_labels(labels, n_components)
    if method == "k-means++":
        _, seeds = kmeans_plusplus(
            X, n_components, random_state=random_state, sample_weight=sample_weight
        )
        return SeedResponsibilities(seeds, n_components)
    if method == "random_from_data":
        candidates = np.flatnonzero(sample_weight > 0)
        if candidates.size == X.shape[0]:
            seeds = random_state.choice(X.shape[0], size=n_components, replace=False)
        else:
            seeds = random_state.choice(candidates, size=n_components, replace=False)
        return SeedResponsibilities(seeds, n_components)
    if method == "random":
        return _uniform_random(X.shape[0], n_components, random_state)
    raise ValueError(f"Unknown init_params {method!r}.")


def draws_random(method, n_samples):
    """Whether the start ``method`` on ``n_samples`` rows draws from its random state.

    Every method does but the agglomerations ("hc", "ward") of at most
    ``MAX_AGGLOMERATED_ROWS`` rows, which agglomerate them all. A caller
    that makes a generator for the start alone (one per fit of a model
    selection) skips it where none is drawn from: seeding NumPy's legacy
    generator costs about 0.1 ms, as much as a few EM iterations on a few
    hundred rows.
    """
    return method not in AGGLOMERATIVE or n_samples > MAX_AGGLOMERATED_ROWS


def _one_hot_labels(labels, n_components):
    def responsibilities(rows):
        chunk = labels[rows]
        resp = np.zeros((chunk.size, n_components))
        resp[np.arange(chunk.size), chunk] = 1.0
        return resp

    return responsibilities


class SeedResponsibilities:
    """Each seed row carries all the responsibility of its own component.

    Component k's seed is row ``seeds[k]``; every other row has none. Called
    on a slice of rows like the other starts' functions;
    :func:`skvi._stats.statistics_of_assignment` reads ``seeds`` to sum the
    seed rows alone.
    """

    def __init__(self, seeds, n_components):
        self.seeds = np.asarray(seeds)
        self.n_components = n_components

    def __call__(self, rows):
        seeds = self.seeds
        resp = np.zeros((rows.stop - rows.start, self.n_components))
        inside = np.flatnonzero((seeds >= rows.start) & (seeds < rows.stop))
        resp[seeds[inside] - rows.start, inside] = 1.0
        return resp


class _ReplayedUniform:
    """Uniform responsibilities replayed identically on every pass.

    The caller's generator is advanced past all n * K draws at once, as one
    draw of size (n, K) would; passes replay the saved stream chunk by chunk.
    """

    def __init__(self, n_samples, n_components, random_state):
        self._state = random_state.get_state()
        self._n_components = n_components
        self._replay = None
        self._position = 0
        _discard(random_state, n_samples * n_components)

    def __call__(self, rows):
        if self._replay is None or rows.start < self._position:
            self._replay = np.random.RandomState()
            self._replay.set_state(self._state)
            self._position = 0
        _discard(self._replay, (rows.start - self._position) * self._n_components)
        resp = self._replay.uniform(size=(rows.stop - rows.start, self._n_components))
        self._position = rows.stop
        return resp / resp.sum(axis=1, keepdims=True)


def _uniform_random(n_samples, n_components, random_state):
    return _ReplayedUniform(n_samples, n_components, random_state)


def _discard(random_state, n_draws, block=1 << 16):
    while n_draws > 0:
        size = min(n_draws, block)
        random_state.uniform(size=size)
        n_draws -= size
