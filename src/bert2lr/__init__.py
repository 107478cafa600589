"""bert2lr: distil a fine-tuned BERT teacher into a bag-of-n-grams linear student."""

__version__ = "0.1.0"
