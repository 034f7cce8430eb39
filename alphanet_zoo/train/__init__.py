"""Alpha-divergence supernet training with the sandwich rule."""
