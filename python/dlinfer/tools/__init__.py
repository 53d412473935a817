"""The ``dlinfer`` command line and the tools behind it: bench, doctor, plot.

The library never imports this package; it is loaded on first use.
"""
