"""Do default fits stop at converged models? (issue 9)

The review's data: ``make_blobs(100_000, 10 features, 5 centers,
cluster_std=[1, 2, .5, 1.5, 1], random_state=0)`` fitted with 10 components.
For each estimator and covariance type, the default fit is compared with a
tight one (``tol=1e-8``, ``max_iter=5000``, no merge moves): iterations,
whether it converged, the per-sample bound and its gap to the tight fit, and
the adjusted Rand index against the true clusters. scikit-learn's defaults
are listed for the iteration counts and ARI (its VI bound has other units).

Run: ``python benchmarks/bench_convergence.py [--n-samples N]``; this is not
a speed benchmark, so everything runs in one process.
"""

import argparse
import time
import warnings

from sklearn.datasets import make_blobs
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import BayesianGaussianMixture, GaussianMixture

from skvi import EMGaussianMixture, VariationalGaussianMixture

TIGHT = dict(tol=1e-8, max_iter=5000)


def run(estimator, X, labels):
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        estimator.fit(X)
    seconds = time.perf_counter() - start
    ari = adjusted_rand_score(labels, estimator.predict(X))
    return estimator, ari, seconds


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-samples", type=int, default=100_000)
    parser.add_argument(
        "--covariance-types", default="full,tied,diag,spherical", type=str
    )
    args = parser.parse_args()
    X, labels = make_blobs(
        args.n_samples,
        10,
        centers=5,
        cluster_std=[1, 2, 0.5, 1.5, 1],
        random_state=0,
    )
    print(
        "| estimator | covariance | fit | n_iter | converged | bound | gap to tight "
        "| ARI | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    ours = {"EM": EMGaussianMixture, "VI": VariationalGaussianMixture}
    theirs = {"EM": GaussianMixture, "VI": BayesianGaussianMixture}
    for covariance_type in args.covariance_types.split(","):
        for name, cls in ours.items():
            common = dict(
                n_components=10, covariance_type=covariance_type, random_state=0
            )
            no_merges = {"merge_components": False} if name == "VI" else {}
            tight, tight_ari, tight_seconds = run(
                cls(**common, **TIGHT, **no_merges), X, labels
            )
            fits = [("default", cls(**common))]
            if name == "VI":
                fits.append(("default, no merges", cls(**common, **no_merges)))
            for label, estimator in fits:
                model, ari, seconds = run(estimator, X, labels)
                gap = tight.lower_bound_ - model.lower_bound_
                print(
                    f"| skvi {name} | {covariance_type} | {label} | {model.n_iter_} "
                    f"| {model.converged_} | {model.lower_bound_:.6f} | {gap:.2e} "
                    f"| {ari:.4f} | {seconds:.1f} |"
                )
            print(
                f"| skvi {name} | {covariance_type} | tight | {tight.n_iter_} "
                f"| {tight.converged_} | {tight.lower_bound_:.6f} | 0 "
                f"| {tight_ari:.4f} | {tight_seconds:.1f} |"
            )
            model, ari, seconds = run(theirs[name](**common), X, labels)
            print(
                f"| sklearn {name} | {covariance_type} | default | {model.n_iter_} "
                f"| {model.converged_} | - | - | {ari:.4f} | {seconds:.1f} |"
            )


if __name__ == "__main__":
    main()
