"""One finished run: load it, analyse the trained network, draw its plots."""
