"""aw-train: training, evaluation, checkpoints and plots."""
