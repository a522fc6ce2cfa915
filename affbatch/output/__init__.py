"""What a run writes: the Arrow traces and manifest (``traces``: schemas, tables, atomic
writes), the run store that commits each video and resumes (``runstore``), and pictures of
traces (``plot``)."""
