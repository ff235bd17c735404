"""Export-page section: the self-contained HTML report of the current mask, built when the button is clicked."""
from __future__ import annotations

import html

import streamlit as st
import torch

from app_pages import _ui as ui
from headprune.core.log import log_internal_error


def report_section(keep: torch.Tensor, stem: str) -> None:
    """A download button for the report of `keep` (`Workbench.report`); `stem` names the files, so the
    report's reproduce commands name the mask file the "Download mask JSON" button gives."""
    bench = ui.bench()
    keep = keep.clone()
    versions = {"streamlit": st.__version__}

    def build() -> str:  # runs when the button is clicked, outside the page script: no st calls here
        try:
            return bench.report(keep, mask_file=f"{stem}.mask.json", out=f"{stem}.report.html", versions=versions)
        except Exception as exc:  # the browser gets a page saying so instead of a broken download
            path = log_internal_error(exc, "building the HTML report")
            return (f"<!DOCTYPE html><html><body><h1>The report could not be built</h1><p>{html.escape(str(exc))}"
                    f"</p><p>The traceback is in {html.escape(str(path))}.</p></body></html>")

    st.markdown("**Shareable report**: one HTML file that opens offline in any browser — the model and data, the "
                "mask grid, the importance maps and curves computed so far, before / after numbers, the examples "
                "that flipped, the reproducibility record and the CLI commands that recompute it (about 5 MB: "
                "plotly.js is inside).")
    st.download_button("Download report", data=build, file_name=f"{stem}.report.html", mime="text/html",
                       icon=":material/description:", on_click="ignore", key="download_report")
