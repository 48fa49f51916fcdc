"""Provider backend tests: one contract suite (contract.py) run for every backend."""
