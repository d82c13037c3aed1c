"""One unit per ``covariance_type``; see :mod:`skvi._covariance._unit`."""

from ._unit import CovarianceUnit, DegenerateComponentError
from .diag import DiagCovariance
from .full import FullCovariance
from .spherical import SphericalCovariance
from .tied import TiedCovariance

COVARIANCE_UNITS = {
    unit.name: unit
    for unit in (FullCovariance, TiedCovariance, DiagCovariance, SphericalCovariance)
}


def covariance_unit(covariance_type, n_components, n_features):
    """The unit serving ``covariance_type`` for a K x D mixture."""
    return COVARIANCE_UNITS[covariance_type](n_components, n_features)


__all__ = ["CovarianceUnit", "DegenerateComponentError", "covariance_unit"]
