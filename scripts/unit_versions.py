"""Check or rewrite the table of study unit versions and code hashes (tests/study/unit_versions.json).

    python scripts/unit_versions.py --check tests/study/unit_versions.json
    python scripts/unit_versions.py --update-table tests/study/unit_versions.json

Bump a unit's version= in its @unit(...) first when its code changed what it computes.
"""
import sys

from divergent.study.units import main

if __name__ == "__main__":
    sys.exit(main())
