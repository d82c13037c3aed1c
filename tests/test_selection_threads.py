"""select_model's n_jobs: fits side by side in threads of this process."""

import warnings

from sklearn.exceptions import ConvergenceWarning

from skvi import _agglomeration, select_model
from skvi._degeneracy import DegenerateFitWarning
from skvi.datasets import load_old_faithful


def test_parallel_fits_run_in_threads_and_give_the_sequential_table():
    X = load_old_faithful().data
    params = dict(n_components=range(1, 7), random_state=0, as_frame=False)
    sequential, best = select_model(X, **params)
    _agglomeration._MCLUST_TREES.trees.clear()
    builds = _agglomeration._MCLUST_TREES.builds
    filters = list(warnings.filters)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # max_iter=5: fits that do not converge, whose warnings the table
        # reports instead.
        short, _ = select_model(X, **params, max_iter=5, n_jobs=2)
        threaded, threaded_best = select_model(X, **params, n_jobs=2)
    # The threads built the start tree here (a worker process would have
    # built its own) and share it: at most once per thread.
    assert 1 <= _agglomeration._MCLUST_TREES.builds - builds <= 2
    assert threaded == sequential
    assert threaded_best.get_params() == best.get_params()
    assert not all(row["converged"] for row in short)
    reported = (ConvergenceWarning, DegenerateFitWarning)
    assert not [w for w in caught if issubclass(w.category, reported)]
    # The threads leave the caller's warning filters as they were.
    assert warnings.filters == filters
