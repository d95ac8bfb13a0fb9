"""The offline playground: the paper's comparison in miniature, on a CPU."""
