"""Videos in: walking PATHs (``inputs``), timestamps by demuxing (``probe``), the container's
own account of its length (``container``), the frames each output frame shows (``framerate``:
ffmpeg's ``fps=30`` replayed), and decoding backends (``decoders``)."""
