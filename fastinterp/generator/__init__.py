"""Where a map is learned: the explanation generators and their discriminator (``networks``),
their safetensors checkpoints (``checkpoint``) and the pix2pix training (``training``)."""
