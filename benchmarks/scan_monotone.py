"""Scan fits for half-steps that lower the bound beyond its rounding.

A diagnostic, not a benchmark: it fits the property tests' hard cases
(``tests/test_monotone_rounding.py``, ``make_hard_case``) over a grid of
seeds and settings and prints every fit whose trace drops by more than
``1e-13`` of the bound's size, measured two ways:

* ``bound``: the larger of the bound and its terms (expected log joint,
  entropy, KL terms), as the property test first measures it;
* ``rows``: the same with the expected log joint taken row by row (the
  sum of each row's absolute term), the scale of the rounding of a sum
  whose rows cancel one another.

Usage, from the repository root::

    PYTHONPATH=. python benchmarks/scan_monotone.py --estimators em,vi \\
        --rows few --spacing 3 --features 1,2 --seeds 15

Each fit runs 12 iterations, in one fit or three warm-started pieces.
"""

import argparse
import itertools
import warnings

import numpy as np

from skvi import DegenerateComponentError
from tests.test_monotone_rounding import make_hard_case, row_terms_size

ROUNDING = 1e-13


def largest_drop(case):
    """The largest drop of the joined trace, relative to both scales."""
    model, X = make_hard_case(case)
    iterations = 12 // case["pieces"]
    model.set_params(max_iter=iterations, warm_start=case["pieces"] > 1)
    traces = []
    for _ in range(case["pieces"]):
        try:
            model.fit(X)
        except DegenerateComponentError:
            return None
        except ValueError as error:
            if "default covariance_prior" not in str(error):
                raise
            return None
        traces.append(model.half_step_lower_bounds_[0 if not traces else 1 :])
    joined = np.concatenate(traces)
    drops = -np.diff(joined)
    terms = model.elbo_decomposition(X)
    size = abs(terms.expected_log_joint) + terms.entropy + terms.kl_weights
    size += terms.kl_components
    bound = float(np.max(drops / np.maximum(np.abs(joined[1:]), size)))
    if bound <= ROUNDING:
        return bound, bound
    rows = np.maximum(np.abs(joined[1:]), row_terms_size(model, X))
    return bound, float(np.max(drops / rows))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--estimators", default="em,vi")
    parser.add_argument("--types", default="full,tied,diag,spherical")
    parser.add_argument("--rows", default="few")
    parser.add_argument("--spacing", type=float, default=3.0)
    parser.add_argument("--features", default="1,2")
    parser.add_argument("--seeds", type=int, default=15)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    grid = itertools.product(
        args.estimators.split(","),
        range(args.seeds),
        [int(d) for d in args.features.split(",")],
        args.types.split(","),
        range(1, 5),
        [False, True],
        [0.0, 1e6],
        [1, 3],
    )
    fits = flagged = beyond_rows = 0
    worst = {"bound": 0.0, "rows": 0.0}
    for estimator, seed, d, covariance, k, spanning, offset, pieces in grid:
        case = {
            "estimator": estimator,
            "covariance_type": covariance,
            "n_features": d,
            "n_components": k,
            "spacing": args.spacing,
            "offset": offset,
            "seed": seed,
            "pieces": pieces,
            "rows": args.rows,
            "spanning": spanning,
        }
        drops = largest_drop(case)
        if drops is None:
            continue
        fits += 1
        worst["bound"] = max(worst["bound"], drops[0])
        worst["rows"] = max(worst["rows"], drops[1])
        if drops[0] > ROUNDING:
            flagged += 1
            beyond_rows += drops[1] > ROUNDING
            print(f"bound {drops[0]:.2g} rows {drops[1]:.2g} {case}", flush=True)
    print(
        f"{fits} fits; {flagged} drop by more than 1e-13 of the bound, "
        f"{beyond_rows} of its row terms; worst {worst['bound']:.2g} and "
        f"{worst['rows']:.2g}"
    )


if __name__ == "__main__":
    main()
