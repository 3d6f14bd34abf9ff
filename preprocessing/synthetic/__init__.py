"""Synthetic corpora made by the project (MovingShapes): see `moving_shapes.py`."""
