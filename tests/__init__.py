"""The test suite: one folder per package it tests; shared fixtures in conftest.py, helpers in support/."""
