"""A plugin whose import fails with ZeroDivisionError."""

SHARE = 1 / 0
