r"""
=====================================================
Choosing the number of components with BIC
=====================================================

The Bayesian information criterion (Schwarz 1978)

.. math::

    \mathrm{BIC} = -2 \log p(X; \hat\theta) + p \log N,

with :math:`p` the number of free parameters and :math:`N` the number of
samples (the total sample weight, when weights are given), trades the fit
against the size of the model; lower is better.
:meth:`skvi.EMGaussianMixture.bic` evaluates it with the plain log-likelihood
of the fitted parameters. This example fits every combination of
``n_components`` and ``covariance_type`` to synthetic data drawn from three
elongated, differently oriented Gaussian clusters, and keeps the one with the
smallest BIC.
"""

# %%
# Data
# ----
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Ellipse

from skvi import select_model

rng = np.random.default_rng(0)
centers = np.array([[0.0, 0.0], [6.0, 1.0], [2.0, 6.0]])
scales = np.array([[2.0, 0.4], [1.5, 0.5], [0.6, 1.8]])
angles = np.radians([30.0, -45.0, 10.0])
sizes = [300, 200, 250]
blocks = []
for center, scale, angle, size in zip(centers, scales, angles, sizes, strict=True):
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    )
    blocks.append(center + (rng.normal(size=(size, 2)) * scale) @ rotation.T)
X = np.vstack(blocks)

# %%
# Fit every candidate in one call
# -------------------------------
# :func:`skvi.select_model` fits each combination (in parallel with
# ``n_jobs``) and returns the table with the model of lowest BIC. One k-means
# initialisation per candidate is enough for data this clearly clustered;
# pass ``n_init`` when a poor local optimum could pass for a poor model.
covariance_types = ["spherical", "diag", "tied", "full"]
n_components_range = range(1, 7)
table, best = select_model(
    X, n_components_range, covariance_types, random_state=0, as_frame=False
)
bic = np.array([row["bic"] for row in table]).reshape(
    len(covariance_types), len(n_components_range)
)
i_best, j_best = np.unravel_index(np.argmin(bic), bic.shape)
print(
    f"lowest BIC {bic[i_best, j_best]:.1f}: covariance_type="
    f"{best.covariance_type!r}, n_components={best.n_components}"
)

# %%
# Plot
# ----
# Left: BIC against the number of components, one line per covariance type,
# the chosen model starred. Right: the chosen model's components as one- and
# two-standard-deviation ellipses.
fig, (ax_bic, ax_fit) = plt.subplots(1, 2, figsize=(11, 4.5), layout="constrained")
for i, covariance_type in enumerate(covariance_types):
    ax_bic.plot(n_components_range, bic[i], "o-", label=covariance_type)
ax_bic.plot(n_components_range[j_best], bic[i_best, j_best], "k*", ms=14)
ax_bic.set_xticks(list(n_components_range))
ax_bic.set(xlabel="n_components", ylabel="BIC (lower is better)", title="BIC")
ax_bic.legend(title="covariance_type")


def dense_covariances(model):
    """Each component's (D, D) covariance matrix, whatever the type."""
    n_components, n_features = model.means_.shape
    covariances = model.covariances_
    if model.covariance_type == "tied":
        return np.broadcast_to(covariances, (n_components, n_features, n_features))
    if model.covariance_type == "diag":
        return np.stack([np.diag(c) for c in covariances])
    if model.covariance_type == "spherical":
        return covariances[:, np.newaxis, np.newaxis] * np.eye(n_features)
    return covariances


ax_fit.scatter(X[:, 0], X[:, 1], s=6, c=best.predict(X), cmap="viridis")
for mean, covariance in zip(best.means_, dense_covariances(best), strict=True):
    values, vectors = np.linalg.eigh(covariance)
    angle = np.degrees(np.arctan2(vectors[1, -1], vectors[0, -1]))
    for n_sd in (1.0, 2.0):
        height, width_ = 2.0 * n_sd * np.sqrt(values)
        ax_fit.add_patch(
            Ellipse(mean, width_, height, angle=angle, fill=False, color="k")
        )
ax_fit.set(
    aspect="equal",
    xlabel="x1",
    ylabel="x2",
    title=f"{best.covariance_type} covariances, {best.n_components} components",
)
plt.show()

# %%
# The full model with three components matches how the data were drawn; the
# spherical and diagonal models need extra components to describe the tilted
# clusters, and pay for them in the penalty term.
for covariance_type, row in zip(covariance_types, bic, strict=True):
    best_k = n_components_range[np.argmin(row)]
    print(f"{covariance_type:>9}: best n_components = {best_k}")
