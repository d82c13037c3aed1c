r"""
=====================================================
mclust's fourteen covariance models
=====================================================

Every component covariance of a Gaussian mixture can be written

.. math::

    \Sigma_k = \lambda_k D_k A_k D_k^\top,

with a **volume** :math:`\lambda_k` (a scalar: :math:`|\Sigma_k|^{1/d}`), a
**shape** :math:`A_k` (diagonal, determinant 1: how elongated the ellipsoid
is) and an **orientation** :math:`D_k` (orthogonal: which way it points)
(Banfield & Raftery 1993; Celeux & Govaert 1995). Each of the three is the
same for all components (**E**, equal), free per component (**V**,
variable), or, for shape and orientation, the identity (**I**). Reading
volume, shape and orientation in that order gives R mclust's names, and
skvi's ``covariance_type`` takes them all (see :doc:`/covariance_models`).

This example draws three components of each model in two dimensions, as
mclust's documentation does: one panel per model, the ellipses at one
standard deviation. The components are built from the definition, with a
volume, shape and orientation per component that the model then ties
together or fixes.
"""

# %%
# The three choices
# -----------------
# Free (V) values per component; E takes the first component's value for
# all, I the identity (shape 1:1, axes along the coordinates).
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import Ellipse

volumes = np.array([1.5, 0.5, 2.6])
elongations = np.array([4.0, 1.8, 8.0])  # ratio of the shape's two entries
angles = np.radians([30.0, 120.0, -15.0])
centres = np.array([[-3.4, -1.6], [0.0, 2.6], [3.4, -1.6]])


def choose(letter, values, identity):
    """Per-component values of one choice under the letter E, V or I."""
    if letter == "I":
        return np.full_like(values, identity)
    if letter == "E":
        return np.full_like(values, values[0])
    return values


def covariances(name):
    """The (3, 2, 2) covariances of the model called ``name`` (e.g. 'VEV')."""
    volume = choose(name[0], volumes, 1.0)
    elongation = choose(name[1], elongations, 1.0)
    angle = choose(name[2], angles, 0.0)
    result = []
    for lam, a, theta in zip(volume, elongation, angle, strict=True):
        shape = np.diag([np.sqrt(a), 1.0 / np.sqrt(a)])  # determinant 1
        rotation = np.array(
            [[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]]
        )
        result.append(lam * rotation @ shape @ rotation.T)
    return np.array(result)


# %%
# Drawing them
# ------------
# Rows: spherical models (shape and orientation I), diagonal models
# (orientation I: the axes follow the coordinates), and the eight
# ellipsoidal ones. The count under each name is its number of covariance
# parameters in :math:`d` dimensions with :math:`K` components, as mclust
# counts them (the means and weights add :math:`Kd + K - 1` to every model).
rows = [
    ["EII", "VII"],
    ["EEI", "VEI", "EVI", "VVI"],
    ["EEE", "VEE", "EVE", "VVE"],
    ["EEV", "VEV", "EVV", "VVV"],
]
counts = {
    "EII": "1",
    "VII": "K",
    "EEI": "d",
    "VEI": "K + d - 1",
    "EVI": "1 + K(d-1)",
    "VVI": "Kd",
    "EEE": "d(d+1)/2",
    "VEE": "K - 1 + d(d+1)/2",
    "EVE": "1 + K(d-1) + d(d-1)/2",
    "VVE": "Kd + d(d-1)/2",
    "EEV": "d + Kd(d-1)/2",
    "VEV": "K + d - 1 + Kd(d-1)/2",
    "EVV": "1 + K(d-1) + Kd(d-1)/2",
    "VVV": "Kd(d+1)/2",
}
colours = ["tab:blue", "tab:orange", "tab:green"]
fig, axes = plt.subplots(4, 4, figsize=(10, 10.5), layout="constrained")
for ax in axes.flat:
    ax.set_axis_off()
for row, names in zip(axes, rows, strict=True):
    for ax, name in zip(row, names, strict=False):
        for centre, covariance, colour in zip(
            centres, covariances(name), colours, strict=True
        ):
            values, vectors = np.linalg.eigh(covariance)
            angle = np.degrees(np.arctan2(vectors[1, -1], vectors[0, -1]))
            width, height = 2.0 * np.sqrt(values[::-1])
            ax.add_patch(
                Ellipse(centre, width, height, angle=angle, color=colour, alpha=0.35)
            )
            ax.add_patch(
                Ellipse(centre, width, height, angle=angle, fill=False, color=colour)
            )
            ax.plot(*centre, "+", color=colour)
        ax.set(xlim=(-6.5, 6.5), ylim=(-5, 5.5), aspect="equal")
        ax.set_title(f"{name}\n{counts[name]}", fontsize=10)
        ax.set_axis_on()
        ax.set_xticks([])
        ax.set_yticks([])
fig.suptitle("volume, shape, orientation: E equal, V variable, I identity", fontsize=11)
plt.show()

# %%
# Reading the panels: in EII all three circles are the same; VII lets their
# sizes differ. The diagonal models keep the axes along the coordinates;
# EEI gives all three the same ellipse, VEI scales it, EVI changes how
# elongated each is at equal volume, VVI frees both. Among the ellipsoidal
# models, EEE is one ellipse moved around (scikit-learn's ``'tied'``), EEV
# turns it, VEE scales it, and VVV (``'full'``) frees everything.
