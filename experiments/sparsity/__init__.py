"""Sparse training (RigL, SET, FreeTickets, Sup-tickets), MNIST-1D."""
