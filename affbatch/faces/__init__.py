"""Faces in frames: RetinaFace's runtime wrapper with its pre- and post-processing and NMS
(``detector``), tracks across frames (``tracking``), and the paper's 96x96 crops in [-1, 1]
(``crops``)."""
