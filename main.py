"""LM-Searcher command line. ``python main.py --help`` lists the search flags."""

import sys

from agent.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
