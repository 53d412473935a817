"""Training and export of the workshop models (needs the ``train`` extra).

This package imports TensorFlow; the ``dlinfer`` runtime never does.
"""
