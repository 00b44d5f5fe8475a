"""rnn_lab's own Hydra launcher plugin: ``launcher=stacked`` (see stacked_launcher.py).

Hydra finds launchers only under the ``hydra_plugins`` namespace package (no ``__init__.py``
directly in ``hydra_plugins/``), which the project installs next to ``rnn_lab``.
"""
