"""``python -m ssdn.report``: see `ssdn.report.cli`."""

from ssdn.report.cli import main

if __name__ == "__main__":
    main()
