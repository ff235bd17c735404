"""headprune dashboard (placeholder until the dashboard lands): `streamlit run app.py`."""
import streamlit as st

st.set_page_config(page_title="headprune", layout="wide")
st.title("headprune")
st.write("Interactive workbench for finding, testing and removing redundant attention heads. The dashboard is coming.")
