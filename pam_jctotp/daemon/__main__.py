"""python -m pam_jctotp.daemon: jctotpd."""

import sys

from .serve import main

sys.exit(main())
