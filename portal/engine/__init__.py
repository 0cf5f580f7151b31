"""The level engine: program definitions, aggregates, rules, scores, transitions, runs.

Pure Python + SQLAlchemy; never imports Flask. Time is always a parameter (``as_of``).
"""
