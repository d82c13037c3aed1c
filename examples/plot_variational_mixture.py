r"""
===========================================================
Variational mixtures: pruning, predictive scores, the bound
===========================================================

:class:`skvi.VariationalGaussianMixture` fits priors and a factorised
posterior instead of point estimates. Three consequences, on synthetic data
with three clusters:

* with the stick-breaking (Dirichlet process) prior and more components than
  clusters, the surplus components are left with negligible weight;
* ``score`` is the log posterior predictive density, a normalised density, so
  held-out scores compare models with different ``n_components``;
* the ELBO is a lower bound on the log evidence: on data small enough to sum
  over every assignment, :func:`skvi.exact_log_evidence` shows the gap.
"""

# %%
# Surplus components are pruned
# -----------------------------
import matplotlib.pyplot as plt
import numpy as np
from sklearn.model_selection import train_test_split

from skvi import EMGaussianMixture, VariationalGaussianMixture, exact_log_evidence

rng = np.random.RandomState(0)
centers = np.array([[0.0, 0.0], [6.0, 1.0], [2.0, 6.0]])
labels = rng.randint(3, size=900)
X = centers[labels] + rng.normal(size=(900, 2)) @ [[1.0, 0.3], [0.0, 0.8]]

vgm = VariationalGaussianMixture(
    n_components=8, tol=1e-6, max_iter=1000, random_state=0
).fit(X)
print("weights:", np.round(vgm.weights_, 4))

fig, (ax_weights, ax_trace) = plt.subplots(1, 2, figsize=(10, 3.8))
ax_weights.bar(np.arange(8), vgm.weights_)
ax_weights.set(xlabel="component", ylabel="E[pi_k]", title="Stick-breaking prior, K=8")
ax_trace.plot(vgm.lower_bounds_, ".-")
ax_trace.set(xlabel="iteration", ylabel="ELBO per sample", title="The ELBO climbs")
fig.tight_layout()

# %%
# Held-out predictive scores
# --------------------------
# The predictive density integrates the parameters over q, so more
# components than the data support do not buy a better held-out score. EM's
# held-out log-likelihood is shown for comparison.
train, test = train_test_split(X, test_size=0.5, random_state=0)
ks = np.arange(1, 8)
vi_scores, em_scores = [], []
for k in ks:
    vi = VariationalGaussianMixture(n_components=k, max_iter=500, random_state=0)
    em = EMGaussianMixture(n_components=k, random_state=0)
    vi_scores.append(vi.fit(train).score(test))
    em_scores.append(em.fit(train).score(test))
print("best n_components by held-out predictive score:", ks[np.argmax(vi_scores)])

fig, ax = plt.subplots(figsize=(5.5, 3.8))
ax.plot(ks, vi_scores, "o-", label="VI: log posterior predictive")
ax.plot(ks, em_scores, "s--", label="EM: log-likelihood")
ax.set(xlabel="n_components", ylabel="held-out score per sample")
ax.legend()
fig.tight_layout()

# %%
# The ELBO is below the exact log evidence
# ----------------------------------------
# Nine points from two clusters: summing over all K^9 assignments gives the
# exact log evidence of each model. With one component the factorised q is
# the exact posterior and the bound is tight; with more, the gap is
# KL(q || posterior) > 0. (``n_init`` keeps the best of several starts: the
# ELBO has local optima.)
tiny = np.concatenate([rng.normal(-2.0, 0.5, 5), rng.normal(2.0, 0.5, 4)])[:, None]
rows = []
for k in (1, 2, 3):
    model = VariationalGaussianMixture(
        n_components=k,
        reg_covar=0.0,
        max_iter=500,
        tol=1e-10,
        n_init=10,
        random_state=0,
    ).fit(tiny)
    evidence = exact_log_evidence(model, tiny)
    rows.append((k, model.lower_bound_ * len(tiny), evidence))
    print(
        f"K={k}: ELBO {rows[-1][1]:.4f}  log p(X) {evidence:.4f}  "
        f"gap {evidence - rows[-1][1]:.2e}"
    )

fig, ax = plt.subplots(figsize=(5.5, 3.8))
k_values, bounds, evidences = (np.array(column) for column in zip(*rows, strict=True))
ax.plot(k_values, evidences, "ko-", label="exact log evidence")
ax.plot(k_values, bounds, "o--", label="ELBO")
ax.set(xlabel="n_components", ylabel="nats", xticks=k_values)
ax.legend()
fig.tight_layout()
plt.show()
