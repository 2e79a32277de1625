"""Step-time and speed comparisons, as ratios on one machine."""
