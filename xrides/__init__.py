"""Shared core of the XRides platform: the ride contract, settings, logging, errors."""
