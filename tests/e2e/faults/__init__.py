"""The fault-injection suite's machinery, shared by its tests (tests/e2e/test_faults*.py) and
by the fault drill of `make bench` (bench/faults.py): a stack of its own, the faults, the
scenarios and the checks of what a user sees."""
