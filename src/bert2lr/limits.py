"""Limits that more than one module must agree on."""

import os

from bert2lr.errors import UserError

# The longest n-gram the compiled scorer handles (in words). Parameters and model files that
# ask for more are refused when they are read, not when the scorer runs.
MAX_NGRAM = 8


# The threads of the student's scorer and of the teacher's inference (ONNX Runtime, torch per process).
def default_threads() -> int:
    """BERT2LR_THREADS, else the cores this process may use (all of them where that cannot be told)."""
    setting = os.environ.get("BERT2LR_THREADS")
    if setting:
        try:
            threads = int(setting)
        except ValueError:
            threads = 0
        if threads < 1:
            raise UserError(f"BERT2LR_THREADS={setting!r}: expected a whole number of threads, 1 or more")
        return threads
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1
