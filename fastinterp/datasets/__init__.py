"""The data a generator learns from.

    images  images with labels and masks: synthetic cluttered digits and textured shapes, folders
    zoo     CNNs to explain: torchvision architectures adapted to small inputs, trained in minutes
    build   sharded training sets of (image, CGMs, teacher map) examples, resumable, multi-rank
    reader  reading them back (ExplanationDataset), several folders as one (training_set)
"""

from fastinterp.datasets.build import build_dataset
from fastinterp.datasets.images import (DATASETS, ImageFolderImages, SyntheticImages, cluttered_digits, image_folder,
                                        synthetic_dataset, textured_shapes)
from fastinterp.datasets.reader import ExplanationDataset, training_set
from fastinterp.datasets.zoo import ARCHS, DEFAULT_ZOO, FAMILIES, build_cnn, load_cnn, save_cnn, train_cnn

__all__ = ["ARCHS", "DATASETS", "DEFAULT_ZOO", "FAMILIES", "ExplanationDataset", "ImageFolderImages", "SyntheticImages",
           "build_cnn", "build_dataset", "cluttered_digits", "image_folder", "load_cnn", "save_cnn", "synthetic_dataset",
           "textured_shapes", "train_cnn", "training_set"]
