"""One unit per ``covariance_type``; see :mod:`skvi._covariance._unit`.

scikit-learn's four names have their own units and layouts; mclust's
fourteen model names are compositions of volume, shape and orientation in
the full layout (:mod:`skvi._covariance.mclust`).
"""

from ._unit import CovarianceUnit, DegenerateComponentError
from .diag import DiagCovariance
from .full import FullCovariance
from .mclust import MCLUST_MODELS, ConstrainedCovariance
from .spherical import SphericalCovariance
from .tied import TiedCovariance

COVARIANCE_UNITS = {
    unit.name: unit
    for unit in (FullCovariance, TiedCovariance, DiagCovariance, SphericalCovariance)
}

#: Every name EMGaussianMixture accepts: scikit-learn's four, then mclust's.
COVARIANCE_TYPES = tuple(COVARIANCE_UNITS) + MCLUST_MODELS


def covariance_unit(covariance_type, n_components, n_features):
    """The unit serving ``covariance_type`` for a K x D mixture."""
    if covariance_type in MCLUST_MODELS:
        return ConstrainedCovariance(n_components, n_features, covariance_type)
    return COVARIANCE_UNITS[covariance_type](n_components, n_features)


__all__ = [
    "COVARIANCE_TYPES",
    "MCLUST_MODELS",
    "CovarianceUnit",
    "DegenerateComponentError",
    "covariance_unit",
]
