r"""
=====================================================
Sample weights are repeat counts
=====================================================

:meth:`skvi.EMGaussianMixture.fit` accepts ``sample_weight``, read as a
repeat count: a row of weight :math:`w_n` contributes to the objective, to the
sufficient statistics and to every reported value exactly as :math:`w_n`
copies of that row would. Summaries of large data sets (a histogram of
duplicated measurements, the rows of a data cube with their counts) can
therefore be fitted without expanding them.

This example draws integer counts for each row, fits once with the counts as
weights and once on the data with each row repeated that many times, and
checks that the two fits agree to rounding.
"""

# %%
# Data with repeat counts
# -----------------------
# Every Old Faithful eruption gets a random count from 0 to 4; a count of 0
# drops the row.
import matplotlib.pyplot as plt
import numpy as np

from skvi import EMGaussianMixture
from skvi.datasets import load_old_faithful

X = load_old_faithful().data
counts = np.random.default_rng(0).integers(0, 5, size=len(X))
X_repeated = np.repeat(X, counts, axis=0)
print(f"{len(X)} rows, {len(X_repeated)} after repetition")

# %%
# Two fits from the same start
# ----------------------------
# The random draws of an initialisation depend on which rows exist, so the
# weighted and the repeated data would start from different points. Both fits
# therefore start from the same initial parameters (a random initialisation
# of the weighted data, computed once with ``max_iter=0``). From there every
# step is a function of the weighted sufficient statistics, which are the
# same for both.
start = EMGaussianMixture(2, init_params="random", max_iter=0, random_state=0).fit(
    X, sample_weight=counts
)
settings = dict(
    n_components=2,
    tol=1e-10,
    max_iter=300,
    weights_init=start.weights_,
    means_init=start.means_,
    precisions_init=start.precisions_,
)
weighted = EMGaussianMixture(**settings).fit(X, sample_weight=counts)
repeated = EMGaussianMixture(**settings).fit(X_repeated)

for name in ["weights_", "means_", "covariances_", "lower_bounds_"]:
    a, b = getattr(weighted, name), getattr(repeated, name)
    relative = np.max(np.abs(a - b) / np.abs(b))
    print(f"{name:>14}: largest relative difference {relative:.1e}")
print(f"n_iter_: {weighted.n_iter_} weighted, {repeated.n_iter_} repeated")

# %%
# Everything measured in units of the total weight agrees too: the per-sample
# bound, the mean log-likelihood and the BIC, whose sample size is the sum of
# the weights.
print(f"lower_bound_: {weighted.lower_bound_:.12f} vs {repeated.lower_bound_:.12f}")
print(
    f"score: {weighted.score(X, sample_weight=counts):.12f} vs "
    f"{repeated.score(X_repeated):.12f}"
)
print(
    f"bic: {weighted.bic(X, sample_weight=counts):.6f} vs "
    f"{repeated.bic(X_repeated):.6f}"
)

# %%
# Plot
# ----
# Left: the distinct rows, sized by their count, with the weighted fit's
# components. Right: the two ELBO traces, one on top of the other.
fig, (ax_data, ax_trace) = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
kept = counts > 0
ax_data.scatter(
    X[kept, 0],
    X[kept, 1],
    s=8 * counts[kept],
    c=weighted.predict(X[kept]),
    cmap="viridis",
    alpha=0.6,
)
ax_data.scatter(X[~kept, 0], X[~kept, 1], s=8, marker="x", c="0.6", label="count 0")
ax_data.plot(*weighted.means_.T, "k+", ms=14, mew=2, label="weighted fit means")
ax_data.set(
    xlabel="eruption duration (min)",
    ylabel="waiting time (min)",
    title="Rows sized by their count",
)
ax_data.legend(loc="upper left")

iterations = np.arange(weighted.lower_bounds_.size)
ax_trace.plot(
    iterations, weighted.lower_bounds_, "o-", ms=6, label="sample_weight=counts"
)
ax_trace.plot(iterations, repeated.lower_bounds_, "x--", ms=8, label="repeated rows")
ax_trace.set(
    xlabel="iteration",
    ylabel="per-sample ELBO (lower_bounds_)",
    title="Identical traces",
)
ax_trace.legend()
plt.show()

# %%
# Real-valued weights are accepted as well and read as fractional counts;
# rows of weight zero take no part in the fit (they are never chosen as
# initial seeds either). Note that scaling every weight by a constant does not
# change the per-sample values above, but it does change the BIC, whose
# penalty grows with the logarithm of the total weight.
