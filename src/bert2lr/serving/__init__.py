"""Using a student the pipeline made: load it with its checks, predict, serve over HTTP, audit it.

Nothing here imports torch or transformers: a student runs where neither is installed.
"""
