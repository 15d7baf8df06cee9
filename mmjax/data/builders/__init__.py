"""tfds builders of the procedural shapes datasets (array_record, no TensorFlow needed)."""
