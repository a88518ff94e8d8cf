import sys

from search.command_line.main import main

sys.exit(main())
