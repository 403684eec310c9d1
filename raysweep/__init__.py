"""raysweep: Ray-distributed hyperparameter and scaling sweeps for cross-lingual transfer."""

__version__ = "0.1.0"
