"""From a model and an image to a classification map: blocks, local and distributed runs, map stores."""
