"""The composition root and command line of the 12345 hotline."""
