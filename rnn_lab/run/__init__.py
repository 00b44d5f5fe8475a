"""One run: settings, train state, the training step and loop, and the run directory."""
