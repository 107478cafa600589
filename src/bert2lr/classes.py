"""The class names, indexed by label id: what the data, the teacher's config, the reports and the
predictions call each class."""

CLASS_NAMES = ("neg", "pos")
