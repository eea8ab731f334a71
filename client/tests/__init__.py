"""Unit tests of xrides_client, against an in-process fake of the API (tests/fake_api.py)."""
