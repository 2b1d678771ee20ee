import sys

from landmark_ae.cli import main

sys.exit(main())
