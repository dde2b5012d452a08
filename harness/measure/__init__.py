"""Measurements of one loaded model: accuracy (lm-eval), speed, memory."""
