"""Named exceptions of the `federated` package.

Every failure a user can cause raises a subclass of `FederatedError` whose
message names what is wrong and what to do, so the CLI prints it as-is and
exits with code 2.

    FederatedError
    ├── MissingPackageError (ImportError)  a dataset/model package is not installed; names the pip command
    ├── DatasetError (ValueError)          unknown domain, too few examples, bad partition request
    ├── SimulationConfigError (ValueError) an invalid simulation / protocol / training setting
    └── UploadError                        the platform refused or could not be reached for a round upload
"""

from __future__ import annotations


class FederatedError(Exception):
    """Base class of every error the federated package reports to a user."""


class MissingPackageError(FederatedError, ImportError):
    """A package that ships a dataset or model is not installed."""


class DatasetError(FederatedError, ValueError):
    """A dataset or partition request cannot be satisfied."""


class SimulationConfigError(FederatedError, ValueError):
    """A simulation, protocol or training setting is invalid."""


class UploadError(FederatedError):
    """Pushing a round folder to the platform API failed."""
