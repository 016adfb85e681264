import sys

from weightport.cli.main import main

sys.exit(main())
