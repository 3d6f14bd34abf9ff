"""Evaluation of generated videos (MovingShapes metrics)."""
