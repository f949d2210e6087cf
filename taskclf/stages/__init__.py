"""The pipeline stages, one module each (docs/contract.md lists them in order)."""
