"""Streamlit entry point: `mmsearch ui`, or `streamlit run` on this file (MMSEARCH_URL says where Triton is)."""

from mmsearch.ui.page import main

main()
