"""The user-facing shell: Hydra schema and entry point, sweep callbacks, the rnn-lab CLI."""
