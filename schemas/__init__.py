"""Makes schemas/ the Python package ``streams.contracts.schemas`` (pyproject.toml maps it with package-dir).

The .avsc files here are the public contract and their only copy: a wheel ships them as package data and
streams.contracts.wire loads them with importlib.resources. Consumers in other languages can ignore this file.
"""
