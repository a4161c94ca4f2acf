"""Helpers the test suites share (unit tests now; e2e/ and bench/ can import them too):
what a pod must not reach, and how the bad-input corpus's files are read."""
