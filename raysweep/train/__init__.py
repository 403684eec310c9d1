"""The training and evaluation loops every stage uses (no Ray here), and the task samplers."""
