"""The bottom layer's helpers: errors, atomic files, lazy imports, defaults, CPU class, batching and
numeric comparison. Import-light: nothing here imports torch or a backend at import time."""
