"""Background jobs (headprune.workbench.jobs): progress, results, cancelling and failures."""
import threading

import pytest

from headprune.workbench.jobs import Job, JobCancelled


def test_job_reports_progress_and_result():
    job = Job("count")
    gate = threading.Event()

    def work(progress, should_stop):
        progress(0.5, "half way")
        gate.wait(5)
        return 42

    job.start(work)
    while job.snapshot()["fraction"] < 0.5:
        pass
    snap = job.snapshot()
    assert snap["status"] == "running" and snap["message"] == "half way"
    with pytest.raises(ValueError, match="already running"):
        job.start(work)
    gate.set()
    final = job.wait(5)
    assert final["status"] == "done" and final["result"] == 42 and final["fraction"] == 1.0


def test_job_cancel_stops_at_next_progress_and_failures_are_reported():
    job = Job("loop")

    def loop(progress, should_stop):
        for i in range(10_000):
            progress(i / 10_000, f"step {i}")
            if i == 5:
                job.cancel()
        return "never"

    job.start(loop)
    cancelled = job.wait(5)
    assert cancelled["status"] == "cancelled" and cancelled["result"] is None
    assert cancelled["fraction"] == 6 / 10_000  # stopped at the first progress report after the cancel (i == 5)

    def broken(progress, should_stop):
        raise ValueError("the model is too small")

    job.start(broken)
    final = job.wait(5)
    assert final["status"] == "failed" and "too small" in final["error"]
    job.cancel()
    with pytest.raises(JobCancelled):  # what stops an engine that only reports progress
        job.progress(0.5)
