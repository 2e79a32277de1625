"""The learning-rate grid behind the registry's default rates."""
