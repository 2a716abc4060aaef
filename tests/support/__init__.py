"""Test peers shared by the integration and e2e suites (real processes, on loopback)."""
