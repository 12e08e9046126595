"""Small, fast test images shared by the core and the widget tests."""

import numpy as np


def two_textures(size=192):
    """Grass on the left, brick on the right, three painted strokes on each: every region is a class."""
    from skimage import data
    from skimage.draw import line

    image = data.grass()[:size, :size].astype(np.float32)
    image[:, size // 2:] = data.brick()[:size, size // 2: size]
    labels = np.zeros((size, size), np.uint8)
    rng = np.random.default_rng(0)
    for cls, (x0, x1) in ((1, (8, size // 2 - 8)), (2, (size // 2 + 8, size - 8))):
        for _ in range(3):
            y, x = rng.integers(8, size - 40), rng.integers(x0, x1 - 28)
            rr, cc = line(y, x, y + 30, x + 25)
            for d in range(3):
                labels[np.clip(rr + d, 0, size - 1), cc] = cls
    return image, labels
