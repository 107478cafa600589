"""Limits that more than one module must agree on."""

# The longest n-gram the compiled scorer handles (in words). Parameters and model files that
# ask for more are refused when they are read, not when the scorer runs.
MAX_NGRAM = 8
