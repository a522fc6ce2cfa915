"""Model definitions (torch) and their packaged weights (safetensors, in ``weights/``).

Submodules are imported where they are used, so that ``import affbatch`` stays light.
"""

from pathlib import Path

#: Folder of the weights that ship with affbatch (safetensors + a provenance JSON each).
WEIGHTS_DIR = Path(__file__).parent / "weights"
