"""Training and held-out evaluation of the toy model (``mmaccel toy train`` and ``mmaccel toy eval``).

Kept apart from the runtime: ``import mmaccel``, ``mmaccel.load("toy")`` and ``mmaccel eval`` never import this
package. ``data`` packs training batches, ``guidance`` holds the attention-guidance losses, ``train`` the
two-stage recipe, ``evaluate`` the held-out accuracy and pruning tables, ``plot`` the learning curve.
"""
