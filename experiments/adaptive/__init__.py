"""Adaptive optimizers, schedules and batch-size rules on MNIST-1D."""
