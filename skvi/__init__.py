"""skvi: Gaussian mixtures by EM and variational inference on one exact ELBO.

EM is the special case of variational inference in which q(Z) is the exact
posterior and the parameters are point estimates; both estimators here climb
one evidence lower bound computed by one shared core.
"""

from ._covariance import DegenerateComponentError
from ._degeneracy import DegenerateFitWarning
from ._elbo import ELBODecomposition
from ._em import EMGaussianMixture
from ._evidence import exact_log_evidence
from ._imputer import GaussianMixtureImputer
from ._selection import select_model
from ._variational import VariationalGaussianMixture

__version__ = "0.1.0"

__all__ = [
    "DegenerateComponentError",
    "DegenerateFitWarning",
    "ELBODecomposition",
    "EMGaussianMixture",
    "GaussianMixtureImputer",
    "VariationalGaussianMixture",
    "__version__",
    "exact_log_evidence",
    "select_model",
]
