"""bnplctl: the operator CLI of a Buy-Now-Pay-Later debt & refund service."""

__version__ = "0.2.0"
