"""What a run writes: the Arrow traces and manifest (``traces``: schemas, tables, atomic
writes), the run store that commits each video and resumes (``runstore``), pictures of
traces (``plot``), and exports: Parquet/CSV (``export``), Aff-Wild2 challenge files (``abaw``)
and temporal smoothing (``smoothing``)."""
