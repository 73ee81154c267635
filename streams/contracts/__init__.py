"""The wire contracts: Avro schemas and their codec (:mod:`.wire`), and the dead-letter headers (:mod:`.dlq`).

The schemas are the top-level ``schemas/`` directory of the source tree, the public contract. pyproject.toml
maps that directory to the package ``streams.contracts.schemas`` (``package-dir``), so the same files are
package data in a wheel and are read in place by an editable install: there is no second copy.

This package defines only what its modules share (where the schemas are, and the error for bytes that do not
fit them); import the API from :mod:`streams.contracts.wire`, which re-exports :class:`WireError`.
"""

from __future__ import annotations

from importlib.resources import files
from importlib.resources.abc import Traversable

from streams.errors import ContractError

__all__ = ["SCHEMAS_PACKAGE", "WireError", "schema_dir"]

#: The package whose files are schemas/*.avsc (see pyproject.toml, [tool.setuptools] package-dir).
SCHEMAS_PACKAGE = "streams.contracts.schemas"


class WireError(ContractError):
    """A message cannot be encoded or decoded; the message says which schema/field/bytes and why."""


def schema_dir() -> Traversable:
    """The Avro schemas as installed: ``schema_dir() / "identity.avsc"``. Raises ModuleNotFoundError when
    pdx is not installed (``pip install .`` or ``pip install -e .`` makes the package)."""
    return files(SCHEMAS_PACKAGE)
