"""``python -m ollama_ops.bench``: the bench command without the main CLI."""

import sys

from .command import main

sys.exit(main())
