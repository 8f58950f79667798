"""Tests that pin down the risk core where mutation testing (`make mutate MUTATE=risk`) showed the
suite could not tell a changed decision from the right one."""
