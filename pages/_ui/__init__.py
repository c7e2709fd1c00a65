"""Shared Streamlit helpers for the pages (not a page itself)."""
