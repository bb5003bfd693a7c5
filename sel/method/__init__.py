"""The method's pieces: E/C, the gradient mask, the prune, the curriculum, FLOPs."""
