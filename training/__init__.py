"""training: how the affect models are learned (datasets, losses, schedules, strategies).

Imports ``affbatch`` (its models, labels and metrics); ``affbatch`` never imports it.
"""
