"""Valence and arousal from face crops: the affect models as a run uses them (``runners``:
per-crop and per-track sequence models on compiled engines), the analyzer that turns a video's
frames into face rows (``analyzer``: detect, track, crop, affect), and what ``--model`` and
``--detector`` resolve to (``resolve``)."""
