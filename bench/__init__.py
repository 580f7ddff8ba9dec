"""The bnplctl benchmark: ``python -m bench --users N``."""
