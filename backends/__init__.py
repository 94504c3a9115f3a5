"""First-party backend plugins, declared in the ``softmax_multi.backends`` entry-point group.

Each module holds a ``spec`` (a :class:`softmax_multi.BackendSpec`) and imports its framework
only when a function of it runs, so loading a spec never imports torch, JAX or Dask.
"""
