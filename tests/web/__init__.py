"""Tests of the subscriber's web pages."""
