"""Mirror of ``tensorflow.examples.tutorials`` (the MNIST ``input_data`` reader)."""
