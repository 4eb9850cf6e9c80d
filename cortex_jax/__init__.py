"""cortex-jax: explain vector-quantized generative models through their codebook tokens."""
