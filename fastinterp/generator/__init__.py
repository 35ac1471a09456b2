"""Where a map is learned: the explanation generators and their discriminator (``networks``),
their safetensors checkpoints (``checkpoint``) and the pix2pix training (``training``)."""

from fastinterp.generator.checkpoint import load_generator, save_generator
from fastinterp.generator.networks import GENERATOR_KINDS, build_discriminator, build_generator
from fastinterp.generator.training import TrainConfig, fidelity_report, train_generator

__all__ = ["GENERATOR_KINDS", "TrainConfig", "build_discriminator", "build_generator", "fidelity_report",
           "load_generator", "save_generator", "train_generator"]
