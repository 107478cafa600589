"""The pipeline's stages, one module each, in the order dvc.yaml runs them.

A stage is a function of typed parameters and paths that reads its inputs and writes its outputs
atomically; the `bert2lr` command (cli.py) is its thin front. Stages share the library one level up
(bert, distill, scoring, linear, files, params, lineage) and never import one another.
"""
