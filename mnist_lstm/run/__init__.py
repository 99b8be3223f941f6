"""A training run: train.py (config -> objects -> fit -> test), its callbacks (callbacks.py: a checkpoint on
SIGTERM or Ctrl-C, exact RNG on resume, a stop at a non-finite loss), atomic checkpoint writes
(checkpoint_io.py), and the summary of a sweep (sweep.py)."""
