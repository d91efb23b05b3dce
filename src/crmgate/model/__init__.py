"""The unified data model: pydantic models of the contract's schemas (see contract.py)."""
