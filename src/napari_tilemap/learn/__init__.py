"""From painted labels to a trained model: tiles, validation split, networks, training, model files."""
