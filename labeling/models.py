"""Labeling models (queues, sampling runs, items, labels, gold sets) arrive with issue 3."""
