"""Helpers shared by test modules: a real Prometheus server (`prometheus`) and a running `serve` (`serve`).

Import them as `from support.prometheus import ...` (tests/ is on sys.path because tests/conftest.py
lives there, and pytest puts a rootdir conftest's folder on sys.path).
"""
