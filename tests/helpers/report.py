"""Reading the numbers block of a self-contained HTML report."""
from __future__ import annotations

import json
import re


def report_data(text: str) -> dict:
    """The numbers block of a report."""
    found = re.search(r'<script type="application/json" id="headprune-report-data">(.*?)</script>', text, re.DOTALL)
    assert found, "no data block in the report"
    return json.loads(found.group(1))
