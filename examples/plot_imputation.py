r"""
=====================================================
Missing values: exact fits and mixture imputation
=====================================================

skvi treats a missing entry (NaN) as one more latent variable: EM weighs
each component by the observed marginal :math:`N(x_o \mid \mu_{k,o},
\Sigma_{k,oo})` and updates with the conditional moments of the missing
coordinates, exactly. :class:`skvi.GaussianMixtureImputer` then fills each
missing entry with its conditional expectation under the fitted mixture.

This example hides 20% of the entries, completely at random, of three data
sets (standardised): a three-component Gaussian mixture, and scikit-learn's
bundled ``load_wine`` and ``load_breast_cancer``. It compares the error of
the filled-in values (root mean squared error on the hidden entries) of the
mixture imputer with scikit-learn's ``SimpleImputer`` (column means),
``KNNImputer`` and ``IterativeImputer``.
"""

# %%
# Data sets and the hidden entries
# --------------------------------
import warnings

import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_breast_cancer, load_wine
from sklearn.exceptions import ConvergenceWarning
from sklearn.experimental import enable_iterative_imputer  # noqa: F401
from sklearn.impute import IterativeImputer, KNNImputer, SimpleImputer
from sklearn.preprocessing import StandardScaler

from skvi import EMGaussianMixture, GaussianMixtureImputer

rng = np.random.default_rng(0)


def mixture_data(n_rows=1500):
    means = np.array([[0.0, 0.0, 0.0, 0.0], [3.0, 3.0, -2.0, 1.0], [-3, 2, 2, -2]])
    roots = rng.normal(size=(3, 4, 4)) * 0.7
    labels = rng.integers(3, size=n_rows)
    noise = np.einsum("nij,nj->ni", roots[labels], rng.standard_normal((n_rows, 4)))
    return means[labels] + noise


data_sets = {
    "mixture (3 components)": mixture_data(),
    "wine": load_wine().data,
    "breast cancer": load_breast_cancer().data,
}
hidden_fraction = 0.2

# %%
# Fill in, four ways
# ------------------
# The mixture gets three components and a small ``reg_covar`` (the real data
# sets have few rows for their dimension).
imputers = {
    "GaussianMixtureImputer": lambda: GaussianMixtureImputer(
        EMGaussianMixture(3, reg_covar=1e-2, n_init=3, random_state=0)
    ),
    "IterativeImputer": lambda: IterativeImputer(max_iter=50, random_state=0),
    "KNNImputer": lambda: KNNImputer(n_neighbors=10),
    "SimpleImputer (mean)": lambda: SimpleImputer(),
}
errors = {name: [] for name in imputers}
for data in data_sets.values():
    X = StandardScaler().fit_transform(data)
    hidden = rng.uniform(size=X.shape) < hidden_fraction
    X_missing = np.where(hidden, np.nan, X)
    for name, make in imputers.items():
        with warnings.catch_warnings():
            # IterativeImputer may stop at max_iter before its own tolerance.
            warnings.simplefilter("ignore", ConvergenceWarning)
            filled = make().fit_transform(X_missing)
        errors[name].append(np.sqrt(np.mean((filled[hidden] - X[hidden]) ** 2)))

header = f"{'':<24}" + "".join(f"{name:>24}" for name in data_sets)
print(header)
for name, values in errors.items():
    print(f"{name:<24}" + "".join(f"{value:>24.3f}" for value in values))

# %%
# The errors side by side
# -----------------------
# On the mixture the conditional expectation under the right model is the
# best possible fill, well ahead of the others. On the breast cancer data
# (569 rows, 30 correlated features) the mixture imputer is also the most
# accurate; on wine (178 rows, 13 features) a three-component full mixture
# has few rows per parameter, and ``KNNImputer`` and ``IterativeImputer``
# come out slightly ahead. Every method beats the column means.
fig, ax = plt.subplots(figsize=(7, 3.5))
width = 0.2
positions = np.arange(len(data_sets))
for i, (name, values) in enumerate(errors.items()):
    ax.bar(positions + (i - 1.5) * width, values, width, label=name)
ax.set_xticks(positions, list(data_sets))
ax.set_ylabel("RMSE on hidden entries\n(standardised units)")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
