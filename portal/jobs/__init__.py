"""Periodic jobs declared as data, and the scheduler that runs them."""
