"""The shared conformance suite: the semantics every softmax-multi backend must meet.

:mod:`softmax_multi.conformance.oracle` holds the higher-precision truth the suite measures
against.
"""
