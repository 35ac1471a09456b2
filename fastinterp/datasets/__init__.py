"""The data a generator learns from: images with labels and masks (``images``: synthetic digits and
shapes, image folders), the CNNs that explain them (``zoo``), and the sharded training sets of
(image, CGMs, teacher map) examples (``build``)."""
