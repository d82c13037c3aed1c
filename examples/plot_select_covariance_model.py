r"""
=====================================================
Choosing among the fourteen covariance models
=====================================================

R's ``Mclust(X)`` fits every one of its fourteen covariance models (see
:doc:`/covariance_models`) for one to nine components and keeps the best by
BIC. :func:`skvi.select_model` does the same by default. This example runs
it on Fisher's iris measurements (150 flowers, 4 columns; the species are
not used), draws the BIC of every model against the number of components,
as mclust's ``plot(fit, what = "BIC")`` does, and shows the chosen model.
"""

# %%
# Fit every model
# ---------------
# ``covariance_types='all'`` (the default) is the fourteen models; every fit
# starts from the same model-based hierarchical agglomeration, whose tree
# is built once. One to three components keep the example quick (mclust's
# pick is the same over one to nine).
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Ellipse
from sklearn.datasets import load_iris

from skvi import select_model

iris = load_iris()
X = iris.data
n_components = range(1, 4)
table, best = select_model(X, n_components, random_state=0, as_frame=False)
print(f"chosen: {best.covariance_type} with {best.n_components} components")
for row in sorted(table, key=lambda row: row["bic"])[:5]:
    print(f"{row['covariance_type']} {row['n_components']}  BIC {row['bic']:.2f}")

# %%
# BIC of every model
# ------------------
# skvi's BIC is mclust's with the sign turned (lower is better). A model
# missing at some number of components was degenerate there (mclust's NA):
# its criteria are NaN and it is never chosen.
models = list(dict.fromkeys(row["covariance_type"] for row in table))
bic = np.array([row["bic"] for row in table]).reshape(len(models), -1)
fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
markers = "os^vD<>ph*Xd8P"
for model, values, marker in zip(models, bic, markers, strict=False):
    ax.plot(n_components, values, marker=marker, label=model)
ax.plot(best.n_components, min(row["bic"] for row in table), "k*", ms=16)
ax.set(
    xlabel="number of components",
    ylabel="BIC (lower is better)",
    xticks=list(n_components),
    title="iris: the fourteen models",
)
ax.legend(ncol=2, fontsize=8)
plt.show()

# %%
# The chosen model
# ----------------
# Its components in the two petal columns (their marginal covariances, at
# one and two standard deviations), over the species for comparison. With
# mclust's names ``covariances_`` holds full matrices for every model.
columns = [2, 3]
fig, ax = plt.subplots(figsize=(6, 4.5), layout="constrained")
ax.scatter(X[:, columns[0]], X[:, columns[1]], c=iris.target, s=10, cmap="viridis")
for mean, covariance in zip(best.means_, best.covariances_, strict=True):
    block = covariance[np.ix_(columns, columns)]
    values, vectors = np.linalg.eigh(block)
    angle = np.degrees(np.arctan2(vectors[1, -1], vectors[0, -1]))
    for n_sd in (1.0, 2.0):
        height, width = 2.0 * n_sd * np.sqrt(values)
        ax.add_patch(
            Ellipse(mean[columns], width, height, angle=angle, fill=False, color="k")
        )
ax.set(
    xlabel=iris.feature_names[columns[0]],
    ylabel=iris.feature_names[columns[1]],
    title=f"{best.covariance_type}, {best.n_components} components",
)
plt.show()

# %%
# mclust picks VEV with two components on these data (BIC -561.73 in its
# sign; skvi's 561.73 above): ellipsoids of the same shape, but of their
# own size and orientation. Two of the three species overlap so much that a third
# component does not pay for its parameters.
