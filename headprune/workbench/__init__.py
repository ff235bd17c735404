"""workbench: the stateful object both front ends share — a workload (model + data + shared results), the
Workbench with every operation, background jobs, exports, and the dashboard's UI-free state.

May import: every engine stage. Never Streamlit; front ends (cli, the dashboard) import it, not the reverse.
"""
from .bench import RecoveredMask, Workbench
from .workload import Workload, open_workload

__all__ = ["RecoveredMask", "Workbench", "Workload", "open_workload"]
