"""The model and its training pieces: NumPy only, no files, no config objects."""
