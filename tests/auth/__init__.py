"""Tests of wsgate.auth."""
