"""A fake test package that exercises every outcome the conformance runner must handle."""
