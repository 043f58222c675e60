"""python -m pam_jctotp.cli"""

import sys

from .main import main

sys.exit(main())
