"""Synthetic XRides traffic: a realistic ride generator, the demo stream and (later) load tests."""
