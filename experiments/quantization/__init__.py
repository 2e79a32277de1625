"""8-bit optimizer state (Dettmers et al. 2022): accuracy and embeddings."""
