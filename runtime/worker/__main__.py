"""`python -m runtime.worker APP.FN ...`: one worker process (see `runtime.worker.main`)."""

import sys

from runtime.worker.main import main

sys.exit(main())
