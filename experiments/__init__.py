"""Re-measurements of the papers' claims, one launcher per claim.

Run one as ``python -m experiments.<family>.<claim>`` from the repository root.

Every launcher writes its JSON result to ``experiments/results`` and its plot
next to the launcher; ``$OPTAX_ZOO_RESULTS`` sends both to another directory
(the smoke tests use it, so they never touch the committed results).
"""
