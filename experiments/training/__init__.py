"""Experiments on training procedures: batch augmentation, adversarial."""
