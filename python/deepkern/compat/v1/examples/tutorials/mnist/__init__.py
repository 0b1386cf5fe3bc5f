"""``input_data.read_data_sets`` as in ``tensorflow.examples.tutorials.mnist``."""
